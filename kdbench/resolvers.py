"""OmegaConf resolvers the shipped configs use; registered when kdbench is imported."""

from __future__ import annotations

from omegaconf import OmegaConf


def path_under(folder, relative: str):
    """``${kdbench.path_under:<folder>,<relative>}``: ``<folder>/<relative>``, or null while the folder is unset
    (a preset's community checkpoint, used only when ``KDBENCH_TEACHERS`` / ``community_teachers`` is given)."""
    if folder is None or str(folder) == "":
        return None
    return f"{str(folder).rstrip('/')}/{relative}"


def register() -> None:
    if not OmegaConf.has_resolver("kdbench.path_under"):
        OmegaConf.register_new_resolver("kdbench.path_under", path_under)
