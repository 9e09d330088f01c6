"""The leaderboard as a PNG: per teacher-student pair, our mean ± std per method beside the published number."""
from __future__ import annotations

import os
import textwrap
from typing import Sequence

from ..io import atomic_write
from .aggregate import Row, published_method, variant_labels
from .layout import TableError


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
