"""Atomic file writes: a reader never sees a half-written result, table or checkpoint."""

from __future__ import annotations

import errno
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "w",
                 check: Callable[[Path], None] | None = None, previous: str | os.PathLike | None = None) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    Text mode writes UTF-8 as given (no newline translation). The file gets the permissions a plainly created
    file would (0666 less the umask; the temporary file alone is private). On any failure the temporary file is
    removed and ``path`` is left as it was. ``check(tmp)`` runs on the written file before it replaces ``path``
    (raise to refuse it); ``previous``: the file now at ``path`` is kept there (the last good version survives
    until a checked new one is in place).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    text = {} if "b" in mode else {"encoding": "utf-8", "newline": ""}
    try:
        with os.fdopen(fd, mode, **text) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if check is not None:
            check(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        if previous is not None and path.is_file():
            _keep(path, Path(previous))
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _keep(path: Path, previous: Path) -> None:
    """Make ``previous`` the file now at ``path``; ``path`` stays in place (a hard link where the file system
    has them, so a reader never finds ``path`` missing)."""
    link = previous.with_name(f".{previous.name}.{os.getpid()}.tmp")
    try:
        link.unlink(missing_ok=True)
        os.link(path, link)
        os.replace(link, previous)
    except OSError:
        link.unlink(missing_ok=True)
        os.replace(path, previous)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(directory: str | os.PathLike, probe_bytes: int = 1 << 16) -> None:
    """Raise OSError unless ``directory`` (created if missing) takes a file of ``probe_bytes`` (written,
    fsynced, removed): an unwritable, read-only or full file system fails here."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".kdbench-write-probe.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"\0" * probe_bytes)
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.unlink(probe)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=False, default=str))


def save_torch(path: str | os.PathLike, obj: Any, verify: bool = False,
               previous: str | os.PathLike | None = None) -> Path:
    """``torch.save`` through :func:`atomic_write`; ``verify``: read the written file back and check it (see
    :func:`check_torch_file`) before it replaces ``path``; ``previous``: keep the file now at ``path`` there."""
    import torch

    def check(tmp: Path) -> None:
        try:
            check_torch_file(tmp)
        except ValueError as e:
            raise OSError(errno.EIO, f"{path} read back damaged: {e}") from None

    return atomic_write(path, lambda f: torch.save(obj, f), mode="wb", check=check if verify else None,
                        previous=previous)


def check_torch_file(path: str | os.PathLike) -> None:
    """Raise ValueError saying what is wrong unless ``path`` is a complete torch zip archive whose members all
    match the CRC-32 that ``torch.save`` stored for them (the whole file is read)."""
    try:
        with zipfile.ZipFile(path) as archive:
            if all(m.CRC == 0 for m in archive.infolist() if m.file_size):
                return  # saved without checksums: the archive's structure is all there is to check
            bad = archive.testzip()
    except (zipfile.BadZipFile, EOFError) as e:
        raise ValueError(f"truncated or not a checkpoint ({e})") from None
    except OSError as e:
        raise ValueError(f"unreadable ({e.strerror or e})") from None
    if bad is not None:
        raise ValueError(f"corrupted (checksum mismatch in {bad})")
