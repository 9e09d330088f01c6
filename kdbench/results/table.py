"""``kdbench-table``: aggregate result.json files into a leaderboard beside the published numbers.

Outputs: a rich console table, markdown, CSV, LaTeX (booktabs) and a PNG plot, optionally uploaded to W&B.
Two layouts: one line per (dataset, teacher, student, method, differing settings) (the default), or, with
``--reference NAME``, the paper's layout: methods x teacher-student pairs, ours beside the published number.
Best-epoch and last-epoch top-1 are separate, labelled columns everywhere; failed runs are listed, never averaged.
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdbench.results.aggregate import (Row, _variant_order, aggregate, failed_runs, find_results, published_method,
                                       with_published)

METRICS = ("last", "best", "both")
FORMATS = ("md", "csv", "tex", "png")
CSV_FIELDS = ("dataset", "teacher", "student", "method", "hparams", "kind", "n", "n_failed", "seeds",
              "last_top1_mean", "last_top1_std", "best_top1_mean", "best_top1_std", "last_top5_mean",
              "delta_last_top1", "delta_best_top1", "published_top1", "published_kind", "published_runs",
              "published_source", "delta_last_published", "delta_best_published", "recipe")
LAYOUT_CSV_FIELDS = ("reference", "dataset", "teacher", "student", "method", "variant", "n", "n_failed",
                     "last_top1_mean", "last_top1_std", "best_top1_mean", "best_top1_std", "published_top1",
                     "published_spread", "published_kind", "published_runs", "published_recipe", "published_source")
TEXT_COLUMNS = ("Dataset", "Teacher", "Student", "Method")


class TableError(ValueError):
    """Bad input to kdbench-table: reported as one line, exit code 2."""


# ----------------------------------------------------------------------------- cells
def _stat(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _delta(d: float | None) -> str:
    return "" if d is None else f"{d:+.2f}"


def _published(cell, table: bool = True) -> str:
    """A published number with where it is from, e.g. ``73.33 [crd]`` or ``74.43 ± 0.24 [dist, best]``
    (``table=False`` leaves the table name out: one-table layouts)."""
    if cell is None:
        return ""
    tags = ([cell.table] if table else []) + ([cell.kind] if cell.kind != "unstated" else [])
    return _stat(cell.top1, cell.spread) + (f" [{', '.join(tags)}]" if tags else "")


def _columns(metric: str, published: bool = False) -> list[tuple[str, Callable[[Row], str]]]:
    """(header, cell) pairs shared by the console, markdown and LaTeX tables."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    teacher = lambda r: r.kind == "teacher"
    cols = [
        ("Dataset", lambda r: r.dataset),
        ("Teacher", lambda r: r.teacher or "—"),
        ("Student", lambda r: r.student or "—"),
        ("Method", lambda r: "teacher" if teacher(r) else f"{r.method} ({r.label})" if r.label else r.method),
        ("n", lambda r: "" if teacher(r) else str(r.n)),
    ]
    if metric in ("last", "both"):
        cols += [("Last top-1 (mean ± std)", lambda r: _stat(r.last_top1, r.last_top1_std)),
                 ("Δ last vs CE", lambda r: _delta(r.delta_last))]
    if metric in ("best", "both"):
        cols += [("Best top-1 (mean ± std)", lambda r: _stat(r.best_top1, r.best_top1_std)),
                 ("Δ best vs CE", lambda r: _delta(r.delta_best))]
    cols += [("Top-5 (last, mean)", lambda r: _stat(r.last_top5, None)),
             ("failed", lambda r: "" if teacher(r) else str(r.n_failed))]
    if published:
        cols += [("Published [table]", lambda r: _published(r.published))]
        if metric in ("last", "both"):
            cols += [("Δ last vs published", lambda r: _delta(r.delta_last_pub))]
        if metric in ("best", "both"):
            cols += [("Δ best vs published", lambda r: _delta(r.delta_best_pub))]
    return cols


def _has_published(rows: Sequence[Row]) -> bool:
    return any(r.published is not None for r in rows)


# ----------------------------------------------------------------------------- generic grid
@dataclass
class Grid:
    """A rendered table: header, body (strings), which columns are text, notes printed under it."""

    headers: list[str]
    body: list[list[str]]
    text_columns: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    title: str = "kdbench leaderboard"
    sections: set[int] = field(default_factory=set)  # body indices after which a rule is drawn


def _rows_grid(rows: Sequence[Row], metric: str, published: bool) -> Grid:
    cols = _columns(metric, published)
    body = [[cell(r) for _, cell in cols] for r in rows]
    sections = {i for i, r in enumerate(rows[:-1]) if rows[i + 1].kind == "teacher" or rows[i + 1].dataset != r.dataset}
    notes = ["top-1 in %, mean ± sample std (ddof=1) over completed runs; best-epoch and last-epoch top-1 are "
             "separate columns; failed runs are counted, never averaged"]
    if published:
        notes += _source_notes([r.published for r in rows if r.published is not None])
    return Grid([h for h, _ in cols], body, {i for i, (h, _) in enumerate(cols) if h in TEXT_COLUMNS}, notes,
                sections=sections)


def _source_notes(cells) -> list[str]:
    tables = list(dict.fromkeys(c.table for c in cells))
    from .reference import get_reference

    notes = ["published numbers: [table] names the reference table (kdbench-table --list-references); the epoch "
             "is not stated by the source unless marked best or last; Δ vs published compares the same epoch kind "
             "(both of ours when the source does not say)"]
    for name in tables:
        try:
            citation = get_reference(name).citation + ": "
        except ValueError:  # a table built by the caller
            citation = ""
        sources = sorted({c.source for c in cells if c.table == name})
        notes.append(f"[{name}] {citation}" + "; ".join(sources))
    return notes


def render_grid_rich(grid: Grid) -> Table:
    # Text everywhere: labels such as "[crd]" are not rich markup
    table = Table(title=grid.title, caption=Text("\n".join(grid.notes)) if grid.notes else None)
    for i, header in enumerate(grid.headers):
        table.add_column(Text(header), justify="left" if i in grid.text_columns else "right")
    for i, line in enumerate(grid.body):
        table.add_row(*(Text(c) for c in line), end_section=i in grid.sections)
    return table


def grid_markdown(grid: Grid, notes: bool = True) -> str:
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(esc(h) for h in grid.headers) + " |",
             "|" + "|".join("---" if i in grid.text_columns else "---:" for i in range(len(grid.headers))) + "|"]
    lines += ["| " + " | ".join(esc(c) for c in line) + " |" for line in grid.body]
    text = "\n".join(lines) + "\n"
    if notes and grid.notes:
        text += "\n" + "\n".join(f"- {n}" for n in grid.notes) + "\n"
    return text


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "Δ": r"$\Delta$", "→": r"$\to$", "—": "--", "×": r"$\times$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def grid_latex(grid: Grid) -> str:
    """A booktabs ``tabular`` (with its notes as a LaTeX comment block above it)."""
    spec = "".join("l" if i in grid.text_columns else "r" for i in range(len(grid.headers)))
    out = [f"% {latex_escape(grid.title)}"] + [f"% {n}" for n in grid.notes]
    out += [r"% requires \usepackage{booktabs}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
            " & ".join(latex_escape(h) for h in grid.headers) + r" \\", r"\midrule"]
    for i, line in enumerate(grid.body):
        out.append(" & ".join(latex_escape(c) for c in line) + r" \\")
        if i in grid.sections:
            out.append(r"\midrule")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- default layout
def render_rich(rows: Sequence[Row], metric: str = "both") -> Table:
    """A rich table of the rows; a rule separates the teacher blocks."""
    return render_grid_rich(_rows_grid(rows, metric, _has_published(rows)))


def to_markdown(rows: Sequence[Row], metric: str = "both") -> str:
    """A GitHub-flavoured markdown table of the rows (published columns when the rows carry published numbers)."""
    published = _has_published(rows)
    return grid_markdown(_rows_grid(rows, metric, published), notes=published)


def to_latex(rows: Sequence[Row], metric: str = "both") -> str:
    return grid_latex(_rows_grid(rows, metric, _has_published(rows)))


def _num(x) -> str | float:
    return "" if x is None else round(x, 4)


def to_csv(rows: Sequence[Row], path: str | os.PathLike) -> None:
    """Write all rows with raw numbers (4 decimals, empty when missing) to ``path``, atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        p = r.published
        writer.writerow([r.dataset, r.teacher or "", r.student or "", r.method or "", r.label, r.kind,
                         r.n, r.n_failed, " ".join(map(str, r.seeds)),
                         _num(r.last_top1), _num(r.last_top1_std), _num(r.best_top1), _num(r.best_top1_std),
                         _num(r.last_top5), _num(r.delta_last), _num(r.delta_best),
                         "" if p is None else p.top1, "" if p is None else p.kind, "" if p is None else p.runs,
                         "" if p is None else f"[{p.table}] {p.source}",
                         _num(r.delta_last_pub), _num(r.delta_best_pub),
                         " ".join(f"{k}={v}" for k, v in r.recipe.items())])
    _write_atomic(Path(path), buf.getvalue())


def failed_markdown(failed: Sequence[dict]) -> str:
    if not failed:
        return ""
    lines = [f"\nFailed runs ({len(failed)}, listed and counted, never averaged):\n"]
    for f in failed:
        who = f"{f['dataset']} {f['teacher'] or '—'} → {f['student']} {f['method']} seed {f['seed']}"
        reason = " ".join(str(f["failure"]).split())  # one line per run
        lines.append(f"- {who}: {reason} (after {f['epochs_run']} epochs; {f['path']})")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- paper layout
@dataclass
class Layout:
    """Methods x pairs beside a reference: the grid (files), a compact grid (console; one stacked cell per pair),
    and long-format records for CSV."""

    grid: Grid
    records: list[dict]
    pairs: list[tuple[str, str, str]]
    hidden: int = 0  # our rows outside the reference's pairs or recipes
    compact: Grid | None = None
    shown: int = 0  # our (CE and method) rows placed in the layout
    rows: list = field(default_factory=list)  # those rows and the teachers of the pairs (for the plot)


def _variant_labels(members: Sequence[Row]) -> list[tuple[str, dict]]:
    """For rows shown on one line key: (``k=v, ...``, {k: v}) of the settings (hyper-parameters, recipe) that
    differ among them."""
    from .aggregate import _norm, _show

    settings = [{**r.method_hparams, **r.recipe} for r in members]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    differing = [k for k in keys if len({_norm(s.get(k)) for s in settings}) > 1]
    return [(", ".join(f"{k}={_show(s.get(k))}" for k in differing), {k: s.get(k) for k in differing})
            for s in settings]


def _pair_label(pair: tuple[str, str, str]) -> str:
    return f"{pair[1]} → {pair[2]}"


def _short_pair_label(pair: tuple[str, str, str]) -> str:
    """The preset's pair name (res32x4_res8x4) when there is one, else ``teacher→student``."""
    from .reference import PAIRS

    return next((name for name, p in PAIRS.items() if tuple(p) == tuple(pair)), f"{pair[1]}→{pair[2]}")


def reference_layout(rows: Sequence[Row], name: str, metric: str = "both") -> Layout:
    """Lay ``rows`` out as the reference ``name`` (a table, or a dataset's tables): one line per method (and per
    variant of ours), one column group per pair (ours last / best, published)."""
    from . import reference as ref

    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    tables = ref.resolve_references(name)
    whole_dataset = not (len(tables) == 1 and tables[0].name == name)
    cells = [c for t in tables for c in t.cells if c.dataset == name or not whole_dataset]
    recipes = ref.recipes()
    layout_recipes = [recipes[n] for n in dict.fromkeys(c.recipe for c in cells)]
    ref_pairs = list(dict.fromkeys((c.dataset, c.teacher, c.student) for c in cells))

    def in_pair(row: Row, pair) -> bool:
        return row.dataset == pair[0] and ref.same_model(row.student, pair[2]) and (
            row.kind == "ce" or ref.same_model(row.teacher, pair[1]))

    # ours: rows of the reference's pairs trained with one of its recipes
    ours, hidden = [], 0
    for r in rows:
        if r.kind == "teacher":
            continue
        if any(in_pair(r, p) for p in ref_pairs) and any(ref.recipe_compatible(x, r.recipe) for x in layout_recipes):
            ours.append(r)
        else:
            hidden += 1
    # a table: all its pairs, like the paper; a dataset: the pairs we ran
    pairs = ref_pairs if not whole_dataset else [p for p in ref_pairs if any(in_pair(r, p) and r.kind == "method"
                                                                                 for r in ours)]
    teacher_rows = [r for r in rows if r.kind == "teacher"]
    published: dict[tuple, object] = {}
    for c in cells:  # the first cell in precedence order wins
        key = (c.dataset, c.teacher, c.student, c.method) if c.method != "ce" else (c.dataset, None, c.student, "ce")
        published.setdefault(key, c)

    def cell_for(method: str, pair):
        if method == "ce":
            return next((c for k, c in published.items() if k[3] == "ce" and k[0] == pair[0]
                         and ref.same_model(k[2], pair[2])), None)
        return published.get((pair[0], pair[1], pair[2], method))

    def teacher_row(pair):
        return next((t for t in teacher_rows if t.dataset == pair[0] and ref.same_model(t.teacher, pair[1])), None)

    # one line per published method key (kd, kd+ls, kd+dot, ...) and per variant of ours; a variant is labelled
    # by the settings that differ among our rows of that key
    by_key: dict[str, list[Row]] = {}
    for r in ours:
        if any(in_pair(r, p) for p in pairs):
            by_key.setdefault(published_method(r), []).append(r)
    shown: dict[tuple[str, str], dict] = {}
    order: dict[tuple[str, str], tuple] = {}
    for key, members in by_key.items():
        for r, (label, values) in zip(members, _variant_labels(members)):
            order[(key, label)] = _variant_order(values)
            for p in pairs:
                if in_pair(r, p):
                    shown.setdefault((key, label), {})[p] = r
    ref_methods = list(dict.fromkeys(c.method for c in cells))
    ours_keys = list(by_key)
    methods = [m for m in ref_methods if not whole_dataset or m in ours_keys] + \
              [m for m in ours_keys if m not in ref_methods]
    has_teacher = any(cell_for("teacher", p) or teacher_row(p) for p in pairs)
    has_ce = "ce" in ours_keys or any(cell_for("ce", p) for p in pairs)
    methods = (["teacher"] if has_teacher else []) + (["ce"] if has_ce else []) + \
              [m for m in methods if m not in ("teacher", "ce")]
    lines = []
    for m in methods:
        variants = [k for k in shown if k[0] == m] or [(m, "")]
        lines += sorted(variants, key=lambda k: order.get(k, ()))

    headers, text_cols = ["Method"], {0}
    compact_headers, compact_body = ["Method"], []
    for p in pairs:
        compact_headers.append(_short_pair_label(p))
        label = _pair_label(p)
        if metric in ("last", "both"):
            headers.append(f"{label}: ours last")
        if metric in ("best", "both"):
            headers.append(f"{label}: ours best")
        headers.append(f"{label}: published")
    body, records = [], []
    for key, variant in lines:
        line = [f"{key} ({variant})" if variant else key]
        compact = [line[0]]
        for p in pairs:
            if key == "teacher":
                tr = teacher_row(p)
                ours_last = ours_best = _stat(tr.last_top1, None) if tr else ""
                row = tr
            else:
                row = shown.get((key, variant), {}).get(p)
                ours_last = _stat(row.last_top1, row.last_top1_std) + (f" (n={row.n})" if row.n != 1 else "") if row else ""
                ours_best = _stat(row.best_top1, row.best_top1_std) if row else ""
            c = cell_for(key, p)
            if metric in ("last", "both"):
                line.append(ours_last)
            if metric in ("best", "both"):
                line.append(ours_best)
            line.append(_published(c, table=whole_dataset))
            stack = ([f"L {ours_last}"] if metric in ("last", "both") and ours_last else []) + \
                    ([f"B {ours_best}"] if metric in ("best", "both") and ours_best and key != "teacher" else []) + \
                    ([f"P {_published(c, table=whole_dataset)}"] if c is not None else [])
            compact.append("\n".join(stack))
            if row is not None or c is not None:
                records.append({
                    "reference": name, "dataset": p[0], "teacher": p[1], "student": p[2], "method": key,
                    "variant": variant, "n": "" if row is None or key == "teacher" else row.n,
                    "n_failed": "" if row is None or key == "teacher" else row.n_failed,
                    "last_top1_mean": _num(row.last_top1) if row else "",
                    "last_top1_std": _num(row.last_top1_std) if row else "",
                    "best_top1_mean": _num(row.best_top1) if row else "",
                    "best_top1_std": _num(row.best_top1_std) if row else "",
                    "published_top1": "" if c is None else c.top1, "published_spread": "" if c is None or c.spread is None else c.spread,
                    "published_kind": "" if c is None else c.kind, "published_runs": "" if c is None else c.runs,
                    "published_recipe": "" if c is None else c.recipe,
                    "published_source": "" if c is None else f"[{c.table}] {c.source}"})
        body.append(line)
        compact_body.append(compact)
    notes = [f"reference '{name}': ours = mean ± sample std over completed runs (n = runs when not 1); teacher = "
             "its measured top-1; best-epoch and last-epoch top-1 in separate columns"]
    used = [c for c in (cell_for(k, p) for k, _ in lines for p in pairs) if c is not None]
    notes += _source_notes(used)
    if hidden:
        notes.append(f"{hidden} of our rows are not shown: their pair or training recipe is not in this reference")
    title = f"kdbench vs {name}"
    compact_notes = ["L = ours, last epoch; B = ours, best epoch; P = published"] + notes
    placed = {id(r): r for per_pair in shown.values() for r in per_pair.values()}
    teachers = [t for t in teacher_rows if any(t.dataset == p[0] and ref.same_model(t.teacher, p[1]) for p in pairs)]
    return Layout(Grid(headers, body, text_cols, notes, title=title), records, pairs, hidden,
                  compact=Grid(compact_headers, compact_body, {0}, compact_notes, title=title), shown=len(placed),
                  rows=teachers + [r for r in rows if id(r) in placed])


def layout_csv(layout: Layout, path: str | os.PathLike) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, LAYOUT_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(layout.records)
    _write_atomic(Path(path), buf.getvalue())


# ----------------------------------------------------------------------------- plot
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
            variants.update({id(r): label for r, (label, _) in zip(same, _variant_labels(same))})
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120)
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------- W&B
def upload_wandb(grid: Grid, out: Path, images: Sequence[Path], project: str, mode: str, name: str) -> str:
    """Log the table (and plot) as a W&B run; offline mode needs no login. Returns the run's local directory."""
    import wandb

    run = wandb.init(project=project, mode=mode, dir=str(out), job_type="leaderboard", name=name,
                     config={"headers": grid.headers})
    try:
        payload = {"leaderboard": wandb.Table(columns=grid.headers, data=grid.body)}
        payload.update({f"plot/{p.stem}": wandb.Image(str(p)) for p in images})
        run.log(payload)
        where = run.dir
    finally:
        run.finish()
    return where


# ----------------------------------------------------------------------------- CLI
def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        _umask_mode(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _umask_mode(path: str) -> None:
    """Give a temporary file the mode a plainly created file would get (mkstemp makes it private)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage too)
        print(f"kdbench-table: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="kdbench-table", description="Aggregate kdbench result.json files into a leaderboard, beside "
                "the published numbers of the reference tables (kdbench-table --list-references).")
    p.add_argument("paths", nargs="*", metavar="PATH", help="run directories, sweep roots or result.json files")
    p.add_argument("--out", type=Path, help="where to write the files (default: first PATH if a directory, else cwd)")
    p.add_argument("--dataset", nargs="+", action="extend", metavar="D", help="only these datasets")
    p.add_argument("--method", nargs="+", action="extend", metavar="M", help="only these methods (teacher/CE rows kept as context)")
    p.add_argument("--pair", nargs="+", action="extend", metavar="P",
                   help="only these teacher-student pairs: TEACHER:STUDENT or a preset pair name (res32x4_res8x4)")
    p.add_argument("--metric", choices=METRICS, default="both", help="which top-1 to show (default: both)")
    p.add_argument("--reference", metavar="NAME",
                   help="lay the table out like the paper (methods x pairs) beside reference NAME: a table name or a "
                        "dataset name (its tables); files are named leaderboard-NAME.*")
    p.add_argument("--format", nargs="+", action="extend", choices=FORMATS, dest="formats", metavar="F",
                   help=f"files to write, any of {', '.join(FORMATS)} (default: md csv)")
    p.add_argument("--list-references", action="store_true", help="list the reference tables and exit")
    p.add_argument("--wandb", action="store_true", help="also log the table (and plot) as a W&B run")
    p.add_argument("--wandb-project", default="kdbench", help="W&B project (default: kdbench)")
    p.add_argument("--wandb-mode", choices=("offline", "online"), default="offline",
                   help="offline (default: no login needed; `wandb sync` uploads later) or online")
    return p


def _select(records: list[dict], args) -> list[dict]:
    from .reference import pair as parse_pair, same_model

    if args.dataset:
        records = [r for r in records if r["dataset"]["name"] in args.dataset]
    if args.pair:
        pairs = [parse_pair(p) for p in args.pair]

        def keep(rec):
            ds, student = rec["dataset"]["name"], rec["student"]["name"]
            teacher = (rec.get("teacher") or {}).get("name")
            for p in pairs:
                if (p.dataset and p.dataset != ds) or not same_model(student, p.student):
                    continue
                if rec["method"]["name"] == "ce" or same_model(teacher, p.teacher):
                    return True
            return False
        records = [r for r in records if keep(r)]
    return records


def _list_references(console: Console) -> None:
    from .reference import list_references

    table = Table(title="kdbench reference tables (kdbench-table PATH --reference NAME, or a dataset name for "
                        "all its combinable tables)")
    for h in ("name", "datasets", "cells", "what, from where"):
        table.add_column(h)
    for ref in list_references():
        table.add_row(ref.name, ", ".join(ref.datasets) + ("" if ref.combine else "\n(own recipe)"),
                      str(len(ref.cells)), Text(f"{ref.title}\n{ref.citation}\n{ref.url}"))
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    from .reference import ReferenceError

    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a one-line usage error (2)
        return int(e.code or 0)
    console = Console()
    try:
        if args.list_references:
            _list_references(console)
            return 0
        if not args.paths:
            raise TableError("no PATH given (run directories, sweep roots or result.json files)")
        return _run(args, console)
    except (TableError, ReferenceError) as e:
        print(f"kdbench-table: error: {e}", file=sys.stderr)
        return 2


def _run(args, console: Console) -> int:
    from .reference import resolve_references

    references = resolve_references(args.reference) if args.reference else None  # bad names fail before any work
    records = _select(find_results(args.paths), args)
    rows = aggregate(records, methods=args.method)
    if not rows:
        what = "no kdbench results" + (f" for dataset {' '.join(args.dataset)}" if args.dataset else "") + \
               (f" for pairs {' '.join(args.pair)}" if args.pair else "") + \
               (f" for methods {' '.join(args.method)}" if args.method else "")
        raise TableError(f"{what} found in: {', '.join(args.paths)}")
    rows = with_published(rows, references)
    failed = failed_runs(records, methods=args.method)
    formats = list(dict.fromkeys(args.formats or ["md", "csv"]))
    out = args.out or (Path(args.paths[0]) if Path(args.paths[0]).is_dir() else Path.cwd())

    if args.reference:
        layout = reference_layout(rows, args.reference, args.metric)
        if not layout.shown:
            raise TableError(f"none of the results is a pair of reference '{args.reference}' trained with its "
                             f"recipe (kdbench-table --list-references)")
        grid, stem = layout.grid, f"leaderboard-{args.reference}"
        plot_rows = layout.rows
    else:
        layout, grid, stem, plot_rows = None, _rows_grid(rows, args.metric, _has_published(rows)), "leaderboard", rows
    console.print(render_grid_rich(layout.compact if layout else grid))
    if failed:
        console.print(failed_markdown(failed), highlight=False, markup=False)

    written = []
    if "md" in formats:
        _write_atomic(out / f"{stem}.md", grid_markdown(grid, notes=bool(layout) or _has_published(rows))
                      + failed_markdown(failed))
        written.append(out / f"{stem}.md")
    if "csv" in formats:
        layout_csv(layout, out / f"{stem}.csv") if layout else to_csv(rows, out / f"{stem}.csv")
        written.append(out / f"{stem}.csv")
    if "tex" in formats:
        _write_atomic(out / f"{stem}.tex", grid_latex(grid))
        written.append(out / f"{stem}.tex")
    if "png" in formats:
        plot_png(plot_rows, out / f"{stem}.png", args.metric, title=grid.title)
        written.append(out / f"{stem}.png")
    if args.wandb:
        where = upload_wandb(grid, out, [p for p in written if p.suffix == ".png"], args.wandb_project,
                             args.wandb_mode, stem)
        console.print(f"W&B ({args.wandb_mode}): {where}", highlight=False, markup=False)
    if written:
        console.print("wrote " + ", ".join(map(str, written)), highlight=False, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
