"""The leaderboard as a PNG: per teacher-student pair, our mean ± std per method beside the published number;
and the runs' learning curves (primary metric and training loss per epoch or iteration, mean over seeds)."""
from __future__ import annotations

import math
import os
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..io import atomic_write
from .aggregate import Row, _group_key, _norm, _split, aggregate, published_method, variant_labels
from .layout import TableError
from .tasks import task_metrics


def plot_png(rows: Sequence[Row], path: str | os.PathLike, metric: str = "both", title: str | None = None) -> None:
    """One panel per (dataset, teacher, student): our mean ± std per method (last-epoch circles, best-epoch
    triangles), the published number as a red cross, the teacher's measured top-1 as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks: dict[tuple, list[Row]] = {}
    teachers = {(r.dataset, r.teacher): r for r in rows if r.kind == "teacher"}
    for r in rows:
        if r.kind == "method":
            blocks.setdefault((r.dataset, r.teacher, r.student), [])
    for r in rows:
        if r.kind == "ce":
            for key in blocks:
                if key[0] == r.dataset and key[2] == r.student:
                    blocks[key].append(r)
        elif r.kind == "method":
            blocks[(r.dataset, r.teacher, r.student)].append(r)
    if not blocks:  # CE rows only
        for r in rows:
            if r.kind == "ce":
                blocks.setdefault((r.dataset, None, r.student), []).append(r)
    if not blocks:
        raise TableError("nothing to plot: no student rows")
    n = len(blocks)
    ncols = min(3, n)
    nrows = (n + ncols - 1) // ncols
    width = max(5.0, 0.8 * max(len(v) for v in blocks.values()) + 2.0)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.6 * nrows), squeeze=False)
    for ax, ((dataset, teacher, student), members) in zip(axes.flat, blocks.items()):
        names = [published_method(r) for r in members]
        variants = {}
        for name in dict.fromkeys(names):
            same = [r for r, n in zip(members, names) if n == name]
            variants.update({id(r): label for r, (label, _) in zip(same, variant_labels(same))})
        labels = [name + ("\n" + "\n".join(textwrap.wrap(variants[id(r)], 22)) if variants[id(r)] else "")
                  for r, name in zip(members, names)]
        xs = list(range(len(members)))
        series = []
        if metric in ("last", "both"):
            series.append(("last epoch", "o", -0.12 if metric == "both" else 0.0, lambda r: (r.last_top1, r.last_top1_std)))
        if metric in ("best", "both"):
            series.append(("best epoch", "^", 0.12 if metric == "both" else 0.0, lambda r: (r.best_top1, r.best_top1_std)))
        for label, marker, shift, get in series:
            pts = [(x + shift, *get(r)) for x, r in zip(xs, members) if get(r)[0] is not None]
            if pts:
                ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] or 0.0 for p in pts], fmt=marker,
                            capsize=3, label=f"ours, {label}")
        pub = [(x, r.published.top1) for x, r in zip(xs, members) if r.published is not None]
        if pub:
            ax.scatter([p[0] for p in pub], [p[1] for p in pub], marker="x", color="red", s=60, zorder=3,
                       label="published")
        t = teachers.get((dataset, teacher))
        if t is not None and t.last_top1 is not None:
            ax.axhline(t.last_top1, linestyle="--", color="grey", linewidth=1, label="teacher (measured)")
        ax.set_xticks(xs)
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_title(f"{dataset}: {teacher or '—'} → {student}", fontsize=10)
        ax.set_ylabel("top-1 (%), ours: mean ± std")
        ax.grid(axis="y", alpha=0.3)
        ax.set_xlim(-0.6, len(members) - 0.4)
    legend = {}
    for ax in list(axes.flat)[:n]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    per_row = len(legend) if ncols > 1 else 2
    legend_rows = -(-len(legend) // per_row)
    fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=per_row, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.045 * legend_rows / nrows + 0.02, 1, 1))
    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120), mode="wb")
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- learning curves
@dataclass(frozen=True)
class Curve:
    """One method's learning curves in one setting: per series (the primary metric's name, ``loss``) the points
    ``(x, mean, min, max)`` over the ``n`` completed runs (seeds) whose history has a value at ``x``."""

    label: str
    n: int
    series: dict


@dataclass(frozen=True)
class Setting:
    """The curves of one (dataset, teacher, student) of a task, ``x`` being ``epoch`` or ``iteration``."""

    dataset: str
    teacher: str | None
    student: str | None
    task: str
    x: str
    curves: list


def _variant_key(dataset, teacher, student, method, task, hparams: dict) -> tuple:
    return dataset, teacher, student, method, task, tuple(sorted((k, _norm(v)) for k, v in hparams.items()))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _histories(runs: list[dict]) -> list[list[dict]]:
    """The histories of the completed runs (failed, interrupted and history-less runs are left out)."""
    out = []
    for rec in runs:
        hist = rec.get("history")
        if rec.get("status") == "completed" and isinstance(hist, list):
            hist = [e for e in hist if isinstance(e, dict)]
            if hist:
                out.append(hist)
    return out


def _series(histories: list[list[dict]], x: str, key: str) -> list[tuple[float, float, float, float]]:
    """(x, mean, min, max) of ``entry[key]`` over the runs, at each x where some run has a finite value (a run's
    last entry at an x wins)."""
    at: dict[float, list[float]] = {}
    for hist in histories:
        per_run = {}
        for entry in hist:
            v = entry.get(key)
            if _finite(entry.get(x)) and _finite(v):
                per_run[float(entry[x])] = float(v)
        for k, v in per_run.items():
            at.setdefault(k, []).append(v)
    return [(k, statistics.fmean(vs), min(vs), max(vs)) for k, vs in sorted(at.items())]


def learning_curves(records: Sequence[dict], rows: Sequence[Row] | None = None) -> list[Setting]:
    """Per setting of ``rows`` (default: ``aggregate(records)``), the curves of its CE and method rows from the
    runs' per-epoch histories, grouped as the table groups runs. Curves with fewer than two points are dropped,
    and settings left without curves."""
    rows = aggregate(records) if rows is None else rows
    runs_of: dict[tuple, list[dict]] = {}
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        groups.setdefault(_group_key(rec), []).append(rec)
    for key, runs in groups.items():
        for variant, part in _split(runs):
            runs_of[_variant_key(*key, variant)] = part

    blocks: dict[tuple, list[Row]] = {}
    students = [r for r in rows if r.kind in ("ce", "method")]
    for r in students:
        if r.kind == "method":
            blocks.setdefault((r.dataset, r.teacher, r.student, r.task), [])
    for r in students:
        if r.kind == "method":
            blocks[(r.dataset, r.teacher, r.student, r.task)].append(r)
        else:
            homes = [k for k in blocks if (k[0], k[2], k[3]) == (r.dataset, r.student, r.task)]
            for k in homes or [(r.dataset, None, r.student, r.task)]:
                if r not in blocks.setdefault(k, []):  # aggregate repeats a CE row in each teacher's block
                    blocks[k].append(r)

    settings = []
    for (dataset, teacher, student, task), members in blocks.items():
        members = sorted(members, key=lambda r: r.kind != "ce")  # CE first
        hists = [_histories(runs_of.get(_variant_key(r.dataset, r.teacher, r.student, r.method, r.task, r.hparams),
                                        [])) for r in members]
        entries = [e for hs in hists for h in hs for e in h]
        x = "iteration" if entries and all(_finite(e.get("iteration")) for e in entries) else "epoch"
        metric = task_metrics(task).primary[0]
        curves = []
        for r, hs in zip(members, hists):
            series = {metric: _series(hs, x, metric),
                      "loss": _series(hs, x, "loss")}
            series = {k: v for k, v in series.items() if len(v) >= 2}
            if series:
                label = (published_method(r) or "?") + (f" ({r.label})" if r.label else "") + f", n={len(hs)}"
                curves.append(Curve(label=label, n=len(hs), series=series))
        if curves:
            settings.append(Setting(dataset, teacher, student, task, x, curves))
    return settings


def curves_figure(records: Sequence[dict], rows: Sequence[Row] | None = None, title: str | None = None):
    """The learning-curve figure (a matplotlib ``Figure``), or None when no run has a curve to draw: one row of
    panels per setting, the primary metric left and the training loss right, per method the mean over seeds and a
    min–max band."""
    settings = learning_curves(records, rows)
    if not settings:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.ticker import MaxNLocator

    colors: dict[str, str] = {}  # one colour per method label across the settings
    for s in settings:
        for curve in s.curves:
            colors.setdefault(curve.label.rsplit(", n=", 1)[0], f"C{len(colors) % 10}")
    fig, axes = plt.subplots(len(settings), 2, figsize=(13.0, 3.9 * len(settings)), squeeze=False)
    for (ax_m, ax_l), s in zip(axes, settings):
        name, label = task_metrics(s.task).primary
        where = f"{s.dataset}: {s.teacher or '—'} → {s.student}"
        for curve in s.curves:
            color = colors[curve.label.rsplit(", n=", 1)[0]]
            text = "\n".join(textwrap.wrap(curve.label, 42))
            for ax, key in ((ax_m, name), (ax_l, "loss")):
                pts = curve.series.get(key)
                if not pts:
                    continue
                xs, mean, lo, hi = zip(*pts)
                ax.plot(xs, mean, color=color, marker="o" if len(xs) <= 30 else None, markersize=3, label=text)
                if curve.n > 1:
                    ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0)
        for ax, what in ((ax_m, label), (ax_l, "training loss")):
            ax.set_title(f"{where}: {what}", fontsize=10)
            ax.set_xlabel(s.x)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(what)
            ax.grid(alpha=0.3)
        handles = {}
        for ax in (ax_m, ax_l):
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        ax_l.legend(list(handles.values()), list(handles), loc="upper left", bbox_to_anchor=(1.02, 1.0),
                    fontsize=8, title="method, runs", title_fontsize=8, frameon=False)
    fig.suptitle(f"{title + ': ' if title else ''}learning curves (mean over seeds, band: min–max)", fontsize=11)
    fig.tight_layout()
    return fig


def plot_curves(records: Sequence[dict], rows: Sequence[Row] | None, path: str | os.PathLike,
                title: str | None = None) -> Path | None:
    """Write :func:`curves_figure` to ``path`` atomically; None (and no file) when there is nothing to draw."""
    fig = curves_figure(records, rows, title)
    if fig is None:
        return None
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=120, bbox_inches="tight"), mode="wb")
    finally:
        plt.close(fig)
    return Path(path)
