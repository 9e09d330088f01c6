"""Published reference numbers (top-1 %, COCO box AP %, ...) shipped with kdbench, with their provenance.

The data live in ``kdbench/results/reference/``: ``index.yaml`` lists the tables (in precedence order) and the
training recipes, and each table is one CSV whose every row is one published cell with its own source, epoch kind
(``best`` / ``last`` / ``unstated``) and number of runs. See that folder's ``index.yaml`` for the column meanings.

Small API::

    list_references()                       -> [Reference, ...]        every table, in precedence order
    get_reference("crd")                    -> Reference               one table by name
    resolve_references("cifar100")          -> [Reference, ...]        a table name, or a dataset name (its tables)
    lookup("cifar100", teacher="resnet32x4", student="resnet8x4", method="dkd")  -> [Cell, ...]
    lookup("coco", teacher="resnet101", student="resnet18", method="pld", metric="ap50")
    lookup("imagenet", teacher="ensemble", student="resnet50", method="mealv2", metric="top5")  (MEAL V2's ensemble)
    PAIRS["res32x4_res8x4"]                 -> Pair("cifar100", "resnet32x4", "resnet8x4")

Pure standard library, like the rest of ``kdbench.results``.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Iterable, NamedTuple

KINDS = ("best", "last", "unstated")
PACKAGE = "kdbench.results"
FOLDER = "reference"


class Pair(NamedTuple):
    dataset: str
    teacher: str
    student: str


# The teacher name of a teacher ensemble, in the tables as in a run's result.json (teacher=ensemble records
# teacher.name "ensemble" and its members in teacher.members): a table's note says which members it used.
ENSEMBLE = "ensemble"

# The presets' pair names (conf/experiment/<dataset>/<name>.yaml), spelled like mdistiller's config files.
PAIRS: dict[str, Pair] = {
    "wrn40_2_wrn16_2": Pair("cifar100", "wrn_40_2", "wrn_16_2"),
    "wrn40_2_wrn40_1": Pair("cifar100", "wrn_40_2", "wrn_40_1"),
    "res56_res20": Pair("cifar100", "resnet56", "resnet20"),
    "res110_res20": Pair("cifar100", "resnet110", "resnet20"),
    "res110_res32": Pair("cifar100", "resnet110", "resnet32"),
    "res32x4_res8x4": Pair("cifar100", "resnet32x4", "resnet8x4"),
    "vgg13_vgg8": Pair("cifar100", "vgg13", "vgg8"),
    "vgg13_mv2": Pair("cifar100", "vgg13", "MobileNetV2"),
    "res50_mv2": Pair("cifar100", "resnet50", "MobileNetV2"),
    "res50_vgg8": Pair("cifar100", "resnet50", "vgg8"),
    "res32x4_shuv1": Pair("cifar100", "resnet32x4", "ShuffleV1"),
    "res32x4_shuv2": Pair("cifar100", "resnet32x4", "ShuffleV2"),
    "wrn40_2_shuv1": Pair("cifar100", "wrn_40_2", "ShuffleV1"),
    "res32x4_wrn16_2": Pair("cifar100", "resnet32x4", "wrn_16_2"),
    "res32x4_wrn40_2": Pair("cifar100", "resnet32x4", "wrn_40_2"),
    "wrn40_2_res8x4": Pair("cifar100", "wrn_40_2", "resnet8x4"),
    "wrn40_2_mv2": Pair("cifar100", "wrn_40_2", "MobileNetV2"),
    "r34_r18": Pair("imagenet", "resnet34", "resnet18"),
    "r50_mv1": Pair("imagenet", "resnet50", "mobilenetv1_100"),
    "r101_r18": Pair("coco", "resnet101", "resnet18"),
    "r101_r50": Pair("coco", "resnet101", "resnet50"),
    "r50_mv2": Pair("coco", "resnet50", "MobileNetV2"),
    "mealv2_r50": Pair("imagenet", ENSEMBLE, "resnet50"),
}
# The 13 teacher-student pairs of the CRD benchmark (RepDistiller README), in its column order.
CRD_PAIRS = ("wrn40_2_wrn16_2", "wrn40_2_wrn40_1", "res56_res20", "res110_res20", "res110_res32", "res32x4_res8x4",
             "vgg13_vgg8", "vgg13_mv2", "res50_mv2", "res50_vgg8", "res32x4_shuv1", "res32x4_shuv2", "wrn40_2_shuv1")


@dataclass(frozen=True)
class Recipe:
    """How a published number was trained; ``optim`` / ``epochs`` / ``batch_size`` are None where not fixed."""

    name: str
    description: str
    optim: str | None = None
    epochs: int | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class Cell:
    """One published number (``value`` of ``metric``, a metric of the table's task) and where it comes from."""

    table: str
    dataset: str
    teacher: str
    student: str
    method: str
    value: float
    spread: float | None
    kind: str          # best | last | unstated
    runs: int | str    # a count, or "unstated"
    recipe: str
    source: str
    as_written: str
    note: str
    metric: str = "top1"

    @property
    def top1(self) -> float:
        """The number (named for the classification tables)."""
        return self.value

    @property
    def pair(self) -> tuple[str, str]:
        return self.teacher, self.student


@dataclass(frozen=True)
class Reference:
    name: str
    file: str
    title: str
    citation: str
    url: str
    cells: tuple[Cell, ...]
    combine: bool = True  # part of a dataset-wide reference (False: its own recipe, selected by name only)
    task: str = "classification"

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics the table reports, in the task's order."""
        from .tasks import task_metrics

        have = {c.metric for c in self.cells}
        return tuple(m for m in task_metrics(self.task).names if m in have)

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.dataset for c in self.cells))

    @property
    def pairs(self) -> list[tuple[str, str, str]]:
        """(dataset, teacher, student) in first-appearance order."""
        return list(dict.fromkeys((c.dataset, c.teacher, c.student) for c in self.cells))

    @property
    def methods(self) -> list[str]:
        """Methods in first-appearance order, with the teacher and CE rows first."""
        seen = list(dict.fromkeys(c.method for c in self.cells))
        return [m for m in ("teacher", "ce") if m in seen] + [m for m in seen if m not in ("teacher", "ce")]


class ReferenceError(ValueError):
    """An unknown reference name or malformed reference data."""


# ----------------------------------------------------------------------------- loading
def _read_text(name: str) -> str:
    return resources.files(PACKAGE).joinpath(FOLDER, name).read_text(encoding="utf-8")


def _parse_index(text: str) -> dict:
    """The index is YAML; it is read with PyYAML (a dependency of hydra-core / omegaconf)."""
    import yaml

    data = yaml.safe_load(text)
    if not isinstance(data, dict) or "tables" not in data or "recipes" not in data:
        raise ReferenceError("reference index: expected 'tables' and 'recipes'")
    return data


@lru_cache(maxsize=1)
def _load() -> tuple[dict[str, Recipe], tuple[Reference, ...]]:
    from .tasks import task_metrics

    index = _parse_index(_read_text("index.yaml"))
    recipes = {name: Recipe(name=name, description=str(r.get("description", "")), optim=r.get("optim"),
                            epochs=r.get("epochs"), batch_size=r.get("batch_size"))
               for name, r in index["recipes"].items()}
    tables = []
    for entry in index["tables"]:
        cells = tuple(_parse_cells(entry["name"], _read_text(entry["file"]), recipes))
        task = str(entry.get("task", "classification"))
        known = task_metrics(task).names
        for c in cells:
            if c.metric not in known:
                raise ReferenceError(f"reference table {entry['name']}: metric {c.metric!r} is not one of {known}")
        tables.append(Reference(name=entry["name"], file=entry["file"], title=entry.get("title", ""),
                                citation=entry.get("citation", ""), url=entry.get("url", ""), cells=cells,
                                combine=bool(entry.get("combine", True)), task=task))
    return recipes, tuple(tables)


def _parse_cells(table: str, text: str, recipes: dict[str, Recipe]) -> Iterable[Cell]:
    for i, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        where = f"reference table {table}, line {i}"
        if row["kind"] not in KINDS:
            raise ReferenceError(f"{where}: kind {row['kind']!r} is not one of {KINDS}")
        if row["recipe"] not in recipes:
            raise ReferenceError(f"{where}: unknown recipe {row['recipe']!r}")
        runs = row["runs"]
        if runs != "unstated":
            if not runs.isdigit():
                raise ReferenceError(f"{where}: runs {runs!r} is neither a count nor 'unstated'")
            runs = int(runs)
        if not row["source"].strip():
            raise ReferenceError(f"{where}: no source")
        value = row["value"] if "value" in row else row["top1"]  # classification tables: one top1 column
        yield Cell(table=table, dataset=row["dataset"], teacher=row["teacher"], student=row["student"],
                   method=row["method"], value=float(value),
                   spread=float(row["spread"]) if row["spread"] else None, kind=row["kind"], runs=runs,
                   recipe=row["recipe"], source=row["source"], as_written=row["as_written"], note=row["note"],
                   metric=row.get("metric") or "top1")


# ----------------------------------------------------------------------------- API
def recipes() -> dict[str, Recipe]:
    return dict(_load()[0])


def list_references() -> list[Reference]:
    """Every reference table, in precedence order."""
    return list(_load()[1])


def get_reference(name: str) -> Reference:
    for ref in _load()[1]:
        if ref.name == name:
            return ref
    raise ReferenceError(f"unknown reference '{name}'; valid: {', '.join(reference_names())}")


def reference_names() -> list[str]:
    """Table names, then the dataset names that select every table of that dataset."""
    tables = [r.name for r in _load()[1]]
    datasets = sorted({d for r in _load()[1] for d in r.datasets})
    return tables + datasets


def resolve_references(name: str) -> list[Reference]:
    """A table by name, or the combinable tables with cells of the dataset ``name``, in precedence order."""
    tables = _load()[1]
    if any(r.name == name for r in tables):
        return [get_reference(name)]
    matching = [r for r in tables if name in r.datasets and r.combine]
    own = [r.name for r in tables if name in r.datasets and not r.combine]
    if not matching and own:
        raise ReferenceError(f"the {name} tables have their own recipes and are never combined; select one by name: "
                             f"{', '.join(own)}")
    if not matching:
        raise ReferenceError(f"unknown reference '{name}'; valid: {', '.join(reference_names())}")
    return matching


def same_model(a: str | None, b: str | None) -> bool:
    """Model names as kdbench matches them: case-insensitive, a timm pretrained tag (``.tv_in1k``) ignored."""
    if a is None or b is None:
        return a is b
    return a.split(".")[0].lower() == b.split(".")[0].lower()


def lookup(dataset: str, teacher: str | None = None, student: str | None = None, method: str | None = None,
           references: Iterable[Reference] | None = None, recipe: str | None = None,
           metric: str | None = None) -> list[Cell]:
    """Published cells of ``dataset`` (and the given pair / method / recipe / metric), in precedence order.

    ``teacher`` is not compared for the CE rows (the student trained alone), nor ``student`` for teacher rows.
    """
    tables = list(references) if references is not None else list_references()
    out = []
    for ref in tables:
        for c in ref.cells:
            if c.dataset != dataset or (method is not None and c.method != method):
                continue
            if (recipe is not None and c.recipe != recipe) or (metric is not None and c.metric != metric):
                continue
            if teacher is not None and c.method != "ce" and not same_model(c.teacher, teacher):
                continue
            if student is not None and c.method != "teacher" and not same_model(c.student, student):
                continue
            out.append(c)
    return out


def recipe_compatible(recipe: Recipe, ours: dict) -> bool:
    """Whether a run recipe (``optim.name``, ``trainer.epochs``, ``trainer.batch_size``; missing keys are unknown,
    hence compatible) matches what the published recipe fixes."""
    checks = (("optim.name", recipe.optim), ("trainer.epochs", recipe.epochs), ("trainer.batch_size", recipe.batch_size))
    for key, published in checks:
        value = ours.get(key)
        if published is None or value is None:
            continue
        if str(value).lower() != str(published).lower():
            return False
    return True


def pair(name: str) -> Pair:
    """A preset pair name (``res32x4_res8x4``) or ``TEACHER:STUDENT`` (dataset left empty)."""
    if name in PAIRS:
        return PAIRS[name]
    if name.count(":") == 1 and all(name.split(":")):
        teacher, student = name.split(":")
        return Pair("", teacher, student)
    raise ReferenceError(f"unknown pair '{name}'; valid: TEACHER:STUDENT or one of {', '.join(PAIRS)}")
