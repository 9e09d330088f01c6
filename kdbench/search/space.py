"""Candidate students: the CIFAR zoo of the shipped student configs, a width / depth grid of the zoo's ResNet, WRN
and VGG families (:mod:`.grid`), or a list of model names; and the random draws and mutations the evolutionary
search makes in them."""

from __future__ import annotations

import random
from dataclasses import dataclass
from importlib.resources import files
from typing import Sequence

from omegaconf import OmegaConf

from ..errors import ConfigError
from ..models import resolve_model_name
from ..models.cifar.grid import ALLOWED, FAMILIES, GridPoint, parse_grid_name

SPACES = ("zoo", "grid")


@dataclass(frozen=True)
class Candidate:
    """A student to score: ``name`` is what ``kdbench`` takes as ``student.name``; ``choice`` the
    ``conf/student/<choice>.yaml`` that names it (zoo students: its settings, such as the MobileNetV2 / ShuffleNet
    lr, come with it), if any; ``point`` its place in the width / depth grid, if any."""

    name: str
    choice: str | None = None
    point: GridPoint | None = None

    @property
    def train_overrides(self) -> list[str]:
        """How ``kdbench`` trains it: ``student=<choice>`` (the shipped config) or ``student.name=<name>``."""
        return [f"student={self.choice}"] if self.choice else [f"student.name={self.name}"]

    @property
    def family(self) -> str:
        return self.point.family if self.point else ""


def student_choices() -> dict[str, str]:
    """``conf/student/<choice>.yaml`` -> the model name it sets, for every shipped student config."""
    folder = files("kdbench.conf") / "student"
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if entry.name.endswith(".yaml"):
            out[entry.name[: -len(".yaml")]] = str(OmegaConf.create(entry.read_text()).get("name"))
    return out


def zoo_candidates(image_size: int) -> list[Candidate]:
    """The shipped student configs whose model is a CIFAR zoo model at this image size (``resnet18`` is the CIFAR
    ResNet18 on 32 px images, ``resnet101`` is timm's ImageNet model and not in the zoo)."""
    out = []
    for choice, name in student_choices().items():
        if resolve_model_name(name, image_size).startswith("cifar_"):
            out.append(Candidate(name, choice, _point_of(name)))
    return out


def _point_of(name: str) -> GridPoint | None:
    point = parse_grid_name(name)
    if point is not None:
        return point
    from ..models.cifar.grid import _ZOO_POINTS

    return next((p for p, zoo in _ZOO_POINTS.items() if zoo.lower() == str(name).lower()), None)


class Space:
    """A finite set of candidates with the evolutionary search's two operations: a random member, and a mutation
    (a member that differs from the given one in one respect)."""

    def __init__(self, label: str, candidates: Sequence[Candidate]):
        self.label = label
        self.candidates = list(candidates)
        if not self.candidates:
            raise ConfigError(f"search.space: '{label}' has no candidates")

    def __len__(self) -> int:
        return len(self.candidates)

    def random(self, rng: random.Random) -> Candidate:
        return rng.choice(self.candidates)

    def mutate(self, parent: Candidate, rng: random.Random) -> Candidate:
        """Another member drawn uniformly (a list has no structure to mutate along)."""
        others = [c for c in self.candidates if c != parent]
        return rng.choice(others) if others else parent


class GridSpace(Space):
    """Families x depths x widths. A mutation changes one coordinate, drawn uniformly among those that have another
    value, to another allowed value: the depth, the width, or (with several families) the family, which keeps the
    nearest depth and width the new family allows (as the reference's NAS-Bench-201 mutation switches one
    operation to a different one)."""

    def __init__(self, label: str, grid: dict[str, tuple[list[int], list[int]]], choices: dict[str, str]):
        self.grid = grid
        by_name = {name.lower(): choice for choice, name in choices.items()}
        candidates = []
        for family, (depths, widths) in grid.items():
            for depth in depths:
                for width in widths:
                    point = GridPoint(family, depth, width)
                    candidates.append(Candidate(point.name, by_name.get(point.name.lower()), point))
        self._by_point = {c.point: c for c in candidates}
        super().__init__(label, candidates)

    def mutate(self, parent: Candidate, rng: random.Random) -> Candidate:
        point = parent.point
        depths, widths = self.grid[point.family]
        moves = [axis for axis, values in (("depth", depths), ("width", widths)) if len(values) > 1]
        if len(self.grid) > 1:
            moves.append("family")
        if not moves:
            return parent
        move = rng.choice(moves)
        if move == "depth":
            point = GridPoint(point.family, rng.choice([d for d in depths if d != point.depth]), point.width)
        elif move == "width":
            point = GridPoint(point.family, point.depth, rng.choice([w for w in widths if w != point.width]))
        else:
            family = rng.choice([f for f in self.grid if f != point.family])
            new_depths, new_widths = self.grid[family]
            nearest = lambda values, v: min(values, key=lambda x: (abs(x - v), x))
            point = GridPoint(family, nearest(new_depths, point.depth), nearest(new_widths, point.width))
        return self._by_point[point]


def grid_config(section) -> dict[str, tuple[list[int], list[int]]]:
    """The ``search.grid`` section checked against the allowed values: {family: (depths, widths)}."""
    grid = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section or {})
    if not isinstance(grid, dict) or not grid:
        raise ConfigError(f"search.grid: expected families with depths and widths, e.g. "
                          f"search.grid.resnet.depths=[8,14]; valid families: {', '.join(FAMILIES)}")
    out = {}
    for family, spec in grid.items():
        if spec is None:  # search.grid.vgg=null drops a family
            continue
        if family not in ALLOWED:
            raise ConfigError(f"search.grid.{family}: unknown family; valid: {', '.join(FAMILIES)}")
        if not isinstance(spec, dict) or set(spec) - {"depths", "widths"}:
            raise ConfigError(f"search.grid.{family}: expected {{depths: [...], widths: [...]}}, got {spec!r}")
        axes = []
        for axis, allowed in zip(("depths", "widths"), ALLOWED[family]):
            values = spec.get(axis)
            if not isinstance(values, list) or not values:
                raise ConfigError(f"search.grid.{family}.{axis}: expected a non-empty list of integers from "
                                  f"{', '.join(map(str, allowed))}, got {values!r}")
            bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v not in allowed]
            if bad:
                raise ConfigError(f"search.grid.{family}.{axis}: {bad[0]!r} is not allowed; valid: "
                                  f"{', '.join(map(str, allowed))}")
            axes.append(sorted(set(values)))
        out[family] = (axes[0], axes[1])
    if not out:
        raise ConfigError(f"search.grid: every family is switched off; valid families: {', '.join(FAMILIES)}")
    return out


def build_space(search_cfg, image_size: int) -> Space:
    """The candidate space ``search.space`` names: ``zoo``, ``grid`` or a list of model names."""
    spec = search_cfg.space
    if OmegaConf.is_list(spec) or isinstance(spec, (list, tuple)):
        names = [str(n) for n in spec]
        if not names:
            raise ConfigError("search.space: the list of candidates is empty")
        choices = student_choices()
        by_name = {name.lower(): choice for choice, name in choices.items()}
        candidates = []
        for name in dict.fromkeys(names):
            try:
                resolve_model_name(name, image_size)
            except ConfigError as e:
                raise ConfigError(f"search.space: {e}") from None
            choice = name if name in choices else by_name.get(name.lower())
            candidates.append(Candidate(choices.get(choice, name) if choice else name, choice, _point_of(name)))
        return Space("list", candidates)
    if spec == "zoo":
        return Space("zoo", zoo_candidates(image_size))
    if spec == "grid":
        return GridSpace("grid", grid_config(search_cfg.grid), student_choices())
    raise ConfigError(f"search.space: unknown space {spec!r}; valid: {', '.join(SPACES)} or a list of model names "
                      f"(search.space=[resnet8,resnet14])")
