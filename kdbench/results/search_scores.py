"""Rank correlation between a student search's scores and the accuracy the students reached when trained
(``kdbench-table PATH --search-scores ranking.csv``): for every setting (dataset, teacher, method and its variant)
with trained runs of two or more of the searched students, Spearman's rho between the score and the mean last /
best primary metric (top-1 for classification). Standard library only.

The CSV is what ``kdbench-search`` writes (``ranking.csv``): columns ``candidate`` and ``score`` (higher is
better), and optionally ``dataset`` and ``teacher`` (the setting the scores were computed for: only runs of that
dataset, and of that teacher or CE runs without one, are compared with them).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .aggregate import Row
from .layout import Grid, TableError
from .reference import same_model
from .tasks import task_metrics

FIELDS = ("dataset", "teacher", "method", "variant", "metric", "n", "spearman_last", "spearman_best", "students",
          "source")


@dataclass(frozen=True)
class ScoreSet:
    """One search's scores: ``scores`` maps a candidate name to its score."""

    source: str
    dataset: str | None
    teacher: str | None
    scores: dict[str, float]

    def score_of(self, student: str | None) -> float | None:
        return next((s for name, s in self.scores.items() if same_model(name, student)), None)


@dataclass(frozen=True)
class Correlation:
    dataset: str
    teacher: str | None
    method: str
    variant: str
    students: tuple[str, ...]
    spearman_last: float | None
    spearman_best: float | None
    source: str
    metric: str = "top-1"  # the label of the primary metric compared (the task's: top-1, AP)

    @property
    def n(self) -> int:
        return len(self.students)


def read_scores(path: str | os.PathLike) -> ScoreSet:
    """A ranking CSV; TableError (one line) when it cannot be read or lacks ``candidate`` / ``score``."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise TableError(f"--search-scores: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    if not rows or not {"candidate", "score"} <= set(rows[0]):
        raise TableError(f"--search-scores: {path} has no candidate and score columns (a kdbench-search ranking.csv)")
    scores = {}
    for i, row in enumerate(rows, start=2):
        try:
            value = float(row["score"])
        except (TypeError, ValueError):
            raise TableError(f"--search-scores: {path} line {i}: score {row['score']!r} is not a number") from None
        if not math.isfinite(value):
            raise TableError(f"--search-scores: {path} line {i}: score {row['score']!r} is not finite")
        scores[str(row["candidate"])] = value
    return ScoreSet(str(path), _common(rows, "dataset"), _common(rows, "teacher"), scores)


def _common(rows: list[dict], key: str) -> str | None:
    """The value every row gives ``key`` (None when the column is missing, empty or not the same throughout)."""
    values = {row.get(key) or None for row in rows}
    return values.pop() if len(values) == 1 else None


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation: Pearson's correlation of the (tie-averaged) ranks; None with fewer than two
    pairs or where either side is constant."""
    if len(x) != len(y):
        raise ValueError("spearman: x and y differ in length")
    if len(x) < 2:
        return None
    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return sxy / math.sqrt(sxx * syy)


def correlations(rows: Iterable[Row], score_sets: Sequence[ScoreSet]) -> list[Correlation]:
    """Per score set and setting (dataset, teacher, method, variant) with two or more scored students."""
    unique = {}  # a CE row is repeated in the block of every teacher that distils into its student: count it once
    for r in rows:
        if r.kind in ("method", "ce") and r.student is not None:
            unique.setdefault((r.kind, r.dataset, r.teacher, r.student, r.method, r.label), r)
    rows = list(unique.values())
    out = []
    for scores in score_sets:
        groups: dict[tuple, list[tuple[Row, float]]] = {}
        for row in rows:
            if scores.dataset and row.dataset != scores.dataset:
                continue
            if row.kind == "method" and scores.teacher and not same_model(row.teacher, scores.teacher):
                continue
            score = scores.score_of(row.student)
            if score is None:
                continue
            groups.setdefault((row.dataset, row.teacher, row.method, row.label), []).append((row, score))
        for (dataset, teacher, method, variant), members in sorted(groups.items(), key=lambda g: (
                g[0][0], g[0][2] != "ce", g[0][2], g[0][1] or "", g[0][3])):
            if len(members) < 2:
                continue
            rho = {}
            for kind in ("last", "best"):
                pairs = [(s, r.value(kind)[0]) for r, s in members if r.value(kind)[0] is not None]
                rho[kind] = spearman([p[0] for p in pairs], [p[1] for p in pairs]) if len(pairs) >= 2 else None
            students = tuple(r.student for r, _ in sorted(members, key=lambda m: -m[1]))
            out.append(Correlation(dataset, teacher, method, variant, students, rho["last"], rho["best"],
                                   scores.source, task_metrics(members[0][0].task).primary[1]))
    return out


def _rho(value: float | None) -> str:
    return "" if value is None else f"{value:+.3f}"


def correlation_grid(found: Sequence[Correlation]) -> Grid:
    labels = sorted({c.metric for c in found})
    metric = labels[0] if len(labels) == 1 else "primary metric"
    headers = ["Dataset", "Teacher", "Method", "Variant", "n", f"Spearman ρ (last {metric})",
               f"Spearman ρ (best {metric})", "Students (best score first)"]
    body = [[c.dataset, c.teacher or "—", c.method, c.variant, str(c.n), _rho(c.spearman_last), _rho(c.spearman_best),
             ", ".join(c.students)] for c in found]
    sources = sorted({c.source for c in found})
    notes = [f"scores: {', '.join(sources)}",
             "ρ between the search score and the mean trained accuracy over the searched students of each setting"]
    return Grid(headers=headers, body=body, text_columns={0, 1, 2, 3, 7}, notes=notes,
                title="Search scores vs trained accuracy (Spearman rank correlation)")


def write_correlation_csv(found: Sequence[Correlation], path: str | os.PathLike) -> None:
    import io

    from ..io import write_text

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for c in found:
        writer.writerow({"dataset": c.dataset, "teacher": c.teacher or "", "method": c.method, "variant": c.variant,
                         "metric": c.metric, "n": c.n, "spearman_last": "" if c.spearman_last is None else repr(c.spearman_last),
                         "spearman_best": "" if c.spearman_best is None else repr(c.spearman_best),
                         "students": " ".join(c.students), "source": c.source})
    write_text(path, buffer.getvalue())
