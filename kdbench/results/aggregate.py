"""Group kdbench ``result.json`` records into leaderboard rows (means, baselines, published numbers).

Pure standard library (no torch, no W&B) so that ``kdbench-table`` starts fast.
"""
from __future__ import annotations

import json
import logging
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from .record import iter_records
from .tasks import DEFAULT_TASK, record_task, task_metrics

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- finding
def find_results(paths: Iterable[str | os.PathLike]) -> list[dict]:
    """Load every kdbench ``result.json`` under ``paths`` (files or directories, searched recursively).

    Unreadable files and JSON that is not a kdbench result are skipped with a warning naming
    the file; a run seen twice (same ``run_id``, e.g. a copied run directory) is kept once.
    Each returned record gets a ``_path`` key with the file it came from.
    """
    records: list[dict] = []
    seen_runs: dict[str, str] = {}
    for file, record in iter_records(paths):
        run_id = record["run_id"]
        if run_id in seen_runs:
            log.warning("skipping %s: run %s already read from %s", file, run_id, seen_runs[run_id])
            continue
        seen_runs[run_id] = str(file)
        records.append({**record, "_path": str(file)})
    return records


# ----------------------------------------------------------------------------- rows
# Recipe settings that tell runs of one (dataset, teacher, student, method) apart, next to the method's
# hyper-parameters (read from the run's resolved config; ``trainer.epochs`` falls back to the record's ``epochs``).
RECIPE_KEYS = ("optim.name", "optim.lr", "optim.weight_decay", "optim.schedule", "trainer.epochs", "trainer.batch_size")


@dataclass(frozen=True)
class Row:
    """One leaderboard line.

    ``kind`` is "teacher" (the teacher's measured accuracy: ``last_top1 == best_top1`` is the mean
    of the runs' ``teacher.top1``), "ce" (student trained alone, the baseline) or "method".
    ``hparams`` holds only the method hyper-parameters and recipe settings (``optim.lr``, ``trainer.epochs``, ...)
    that differ between runs of the same (dataset, teacher, student, method), i.e. what tells this row apart from
    its siblings; ``method_hparams`` and ``recipe`` hold all of them for the row.
    Means and sample stds (ddof=1, None for a single run) are over completed runs; failed runs are only counted
    (``n_failed``). ``delta_*`` is this row's mean minus the mean of the CE row of the same setting: same dataset,
    student and recipe (a DOT run compares with the SGD CE run). ``published`` is the published number for the
    row's setting (a :class:`kdbench.results.reference.Cell`, set by :func:`with_published`) and ``delta_*_pub``
    our mean minus it, for the epoch kind the source reports (both when it does not say).
    ``task`` names the task; ``stats`` holds every metric of it (``last_<m>``, ``last_<m>_std``, ``best_<m>``, ...,
    see :meth:`value`); the ``*_top1`` / ``last_top5`` fields are classification's and None on other tasks, and the
    deltas are on the task's primary metric (``primary``).
    """

    kind: str
    dataset: str
    teacher: str | None
    student: str | None
    method: str | None
    hparams: dict = field(default_factory=dict)
    n: int = 0
    n_failed: int = 0
    seeds: tuple = ()
    last_top1: float | None = None
    last_top1_std: float | None = None
    best_top1: float | None = None
    best_top1_std: float | None = None
    last_top5: float | None = None
    delta_last: float | None = None
    delta_best: float | None = None
    recipe: dict = field(default_factory=dict)
    method_hparams: dict = field(default_factory=dict)
    published: Any = None
    delta_last_pub: float | None = None
    delta_best_pub: float | None = None
    task: str = DEFAULT_TASK
    stats: dict = field(default_factory=dict)

    @property
    def primary(self) -> str:
        return task_metrics(self.task).primary[0]

    def value(self, kind: str, metric: str | None = None) -> tuple[float | None, float | None]:
        """(mean, std) of ``metric`` (default: the primary) at epoch kind ``last`` or ``best``."""
        key = f"{kind}_{metric or self.primary}"
        return self.stats.get(key), self.stats.get(f"{key}_std")

    @property
    def label(self) -> str:
        """The distinguishing hyper-parameters, e.g. ``"temperature=2"`` (empty if none)."""
        return ", ".join(f"{k}={_show(v)}" for k, v in self.hparams.items())


def aggregate(records: Sequence[dict], methods: Iterable[str] | None = None) -> list[Row]:
    """Group records into ordered rows: per dataset and teacher, the teacher row, then per
    student the CE row, then the methods alphabetically (sweep variants in value order).

    The CE row of a student is repeated in every teacher block that distils into that student;
    a CE row with no such block gets a block of its own (teacher None, listed last).
    ``methods`` keeps only those method rows; teacher and CE rows stay as context for the kept
    rows (CE rows without a block are shown only when "ce" is selected).
    """
    groups: dict[tuple, list[dict]] = defaultdict(list)
    teacher_acc: dict[tuple, list[dict]] = defaultdict(list)
    for rec in records:
        groups[_group_key(rec)].append(rec)
        if rec.get("teacher"):
            teacher_acc[(rec["dataset"]["name"], rec["teacher"]["name"])].append({**rec["teacher"], "_task": record_task(rec)})

    rows = [_summarise(key, variant, runs) for key, runs in groups.items() for variant, runs in _split(runs)]
    ce_rows: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        if row.kind == "ce":
            ce_rows[(row.dataset, row.student)].append(row)
    rows = [_with_delta(r, [ce for ce in ce_rows[(r.dataset, r.student)] if _same_setting(r.recipe, ce.recipe)])
            for r in rows if r.kind == "method"]
    if methods is not None:
        methods = set(methods)
        rows = [r for r in rows if r.method in methods]
    show_lone_ce = methods is None or "ce" in methods

    blocks: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        blocks[(row.dataset, row.teacher, row.student)].append(row)
    covered = {(d, s) for d, _, s in blocks}
    for (d, s) in ce_rows:
        if show_lone_ce and (d, s) not in covered:
            blocks[(d, None, s)] = []

    ordered: list[Row] = []
    head = None
    for d, t, s in sorted(blocks, key=lambda b: (b[0], b[1] is None, b[1] or "", b[2])):
        if t is not None and (d, t) != head:
            ordered.append(_teacher_row(d, t, teacher_acc[(d, t)]))
            head = (d, t)
        ordered += sorted(ce_rows.get((d, s), []), key=lambda r: variant_order(r.hparams))
        ordered += sorted(blocks[(d, t, s)], key=lambda r: (r.method, variant_order(r.hparams)))
    return ordered


def _group_key(rec: dict) -> tuple:
    method = rec["method"]["name"]
    teacher = rec.get("teacher")
    teacher = None if method == "ce" or not teacher else teacher["name"]
    return rec["dataset"]["name"], teacher, rec["student"]["name"], method, record_task(rec)


def _split(runs: list[dict]) -> list[tuple[dict, list[dict]]]:
    """Split runs of one (dataset, teacher, student, method) by the hyper-parameters and recipe settings that
    differ; method hyper-parameters first, then the recipe keys in ``RECIPE_KEYS`` order."""
    flat = [{**_flatten(r["method"].get("hparams") or {}), **run_recipe(r)} for r in runs]
    hp_keys = sorted({k for hp in flat for k in hp if k not in RECIPE_KEYS})
    keys = hp_keys + [k for k in RECIPE_KEYS if any(k in hp for hp in flat)]
    differing = [k for k in keys if len({_norm(hp.get(k)) for hp in flat}) > 1]
    variants: dict[tuple, tuple[dict, list[dict]]] = {}
    for hp, run in zip(flat, runs):
        variant = {k: hp.get(k) for k in differing}
        key = tuple(_norm(v) for v in variant.values())
        variants.setdefault(key, (variant, []))[1].append(run)
    return list(variants.values())


def run_recipe(rec: dict) -> dict:
    """The ``RECIPE_KEYS`` a record's resolved config sets (keys it lacks are left out)."""
    config = rec.get("config") if isinstance(rec.get("config"), dict) else {}
    out = {}
    for key in RECIPE_KEYS:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None and key == "trainer.epochs":
            node = rec.get("epochs")
        if node is not None:
            out[key] = node
    return out


def _same_setting(a: dict, b: dict) -> bool:
    """Two recipes are the same setting when every key both set agrees (DOT counts as its SGD base)."""
    norm = lambda r: {k: ("sgd" if k == "optim.name" and v == "dot" else v) for k, v in r.items()}
    a, b = norm(a), norm(b)
    return all(_norm(a[k]) == _norm(b[k]) for k in a.keys() & b.keys())


def _summarise(key: tuple, variant: dict, runs: list[dict]) -> Row:
    dataset, teacher, student, method, task = key
    done = [r for r in runs if r.get("status") == "completed"]
    first = runs[0]  # within a variant every run shares the differing keys; the others are common to the group
    metric = lambda name: [m[name] for r in done if _num((m := r.get("metrics") or {}).get(name))]
    stats = {}
    for name in task_metrics(task).names:
        for kind in ("last", "best"):
            stats[f"{kind}_{name}"], stats[f"{kind}_{name}_std"] = _mean_std(metric(f"{kind}_{name}"))
    return Row(
        kind="ce" if method == "ce" else "method", dataset=dataset, teacher=teacher, student=student,
        method=method, hparams=variant, n=len(done), n_failed=len(runs) - len(done),
        seeds=tuple(sorted(r.get("seed") for r in done if r.get("seed") is not None)),
        recipe=run_recipe(first), method_hparams=_flatten(first["method"].get("hparams") or {}),
        **_classification_fields(stats), task=task, stats=stats,
    )


def _classification_fields(stats: dict) -> dict:
    """The ``*_top1`` / ``last_top5`` fields of a row (None where the task has no top-1)."""
    return {"last_top1": stats.get("last_top1"), "last_top1_std": stats.get("last_top1_std"),
            "best_top1": stats.get("best_top1"), "best_top1_std": stats.get("best_top1_std"),
            "last_top5": stats.get("last_top5")}


def _with_delta(row: Row, baselines: list[Row]) -> Row:
    if len(baselines) != 1:  # no CE run, or several CE variants: no unambiguous baseline
        return row
    ce = baselines[0]
    diff = lambda a, b: None if a is None or b is None else a - b
    return replace(row, delta_last=diff(row.value("last")[0], ce.value("last")[0]),
                   delta_best=diff(row.value("best")[0], ce.value("best")[0]))


def _teacher_row(dataset: str, teacher: str, measured: list[dict]) -> Row:
    """The teacher's measured metrics (its record's ``top1``, ``ap``, ...), as both last and best."""
    task = measured[0]["_task"] if measured else DEFAULT_TASK
    stats = {}
    for name in task_metrics(task).names:
        mean = _mean_std([m[name] for m in measured if _num(m.get(name))])[0]
        stats[f"last_{name}"] = stats[f"best_{name}"] = mean
    fields = _classification_fields(stats)
    fields.update(last_top1_std=None, best_top1_std=None)
    return Row(kind="teacher", dataset=dataset, teacher=teacher, student=None, method=None, task=task, stats=stats,
               **fields)


def failed_runs(records: Sequence[dict], methods: Iterable[str] | None = None) -> list[dict]:
    """The failed runs (never averaged), as dicts with where they are and why they failed."""
    keep = None if methods is None else set(methods)
    out = []
    for rec in records:
        if rec.get("status") != "failed" or (keep is not None and rec["method"]["name"] not in keep):
            continue
        dataset, teacher, student, method, task = _group_key(rec)
        out.append({"task": task, "dataset": dataset, "teacher": teacher, "student": student, "method": method,
                    "seed": rec.get("seed"), "epochs_run": rec.get("epochs_run"),
                    "failure": rec.get("failure") or "no reason recorded",
                    "path": str(Path(rec["_path"]).parent) if rec.get("_path") else rec.get("run_dir")})
    return sorted(out, key=lambda f: (f["dataset"], f["teacher"] or "", f["student"], f["method"], str(f["path"])))


def published_method(row: Row) -> str | None:
    """The method name a row has in the reference tables: ``teacher``, ``ce``, or the method, with ``+ls`` when
    it ran with logit standardisation and ``+dot`` when it trained with the DOT optimiser."""
    if row.kind in ("teacher", "ce"):
        return row.kind
    name = row.method or ""
    if row.method_hparams.get("logit_stand") is True:
        name += "+ls"
    if row.recipe.get("optim.name") == "dot":
        name += "+dot"
    return name


def variant_labels(members: Sequence[Row]) -> list[tuple[str, dict]]:
    """For rows shown on one line key: (``k=v, ...``, {k: v}) of the settings (hyper-parameters, recipe) that
    differ among them."""
    settings = [{**r.method_hparams, **r.recipe} for r in members]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    differing = [k for k in keys if len({_norm(s.get(k)) for s in settings}) > 1]
    return [(", ".join(f"{k}={_show(s.get(k))}" for k in differing), {k: s.get(k) for k in differing})
            for s in settings]


def with_published(rows: Sequence[Row], references=None) -> list[Row]:
    """Rows with the published number of their setting attached (see :class:`Row`).

    ``references``: the reference tables to search (default: all, in precedence order); the first cell of the
    same dataset, pair and method whose recipe matches the row's recipe is used.
    """
    from . import reference as ref

    tables = ref.list_references() if references is None else list(references)
    recipes = ref.recipes()
    out = []
    for row in rows:
        cells = ref.lookup(row.dataset, teacher=row.teacher, student=row.student, method=published_method(row),
                           references=tables, metric=row.primary)
        cell = next((c for c in cells if ref.recipe_compatible(recipes[c.recipe], row.recipe)), None)
        if cell is None:
            out.append(row)
            continue
        out.append(replace(row, published=cell, delta_last_pub=_pub_delta(row.value("last")[0], cell, "last"),
                           delta_best_pub=_pub_delta(row.value("best")[0], cell, "best")))
    return out


def _pub_delta(ours: float | None, cell, kind: str) -> float | None:
    """Ours minus the published number, when the source reports this epoch kind (or does not say which)."""
    if ours is None or cell.kind not in (kind, "unstated"):
        return None
    return ours - cell.value


def board_stem(task: str) -> str:
    """File stem of a task's leaderboard: ``leaderboard`` (classification), ``leaderboard-<task>`` otherwise."""
    return "leaderboard" if task == DEFAULT_TASK else f"leaderboard-{task}"


def by_task(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """The rows split per task (classification first, then the others by name), each in its original order."""
    out: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        out[row.task].append(row)
    return {t: out[t] for t in sorted(out, key=lambda t: (t != DEFAULT_TASK, t))}


# ----------------------------------------------------------------------------- helpers
def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _norm(v: Any) -> str:
    """Comparable form of a hyper-parameter value (4 and 4.0 are the same)."""
    return json.dumps(float(v) if _num(v) else v, sort_keys=True)


def variant_order(hparams: dict) -> tuple:
    """Sort key of a variant's settings: numbers by value, then the others."""
    return tuple((0, float(v), "") if _num(v) else (1, 0.0, _norm(v)) for v in hparams.values())


def _show(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return v if isinstance(v, str) else json.dumps(v)
