"""Drawing a leaderboard: a :class:`~kdbench.results.layout.Grid` as a rich console table, markdown or LaTeX
(booktabs); the rows as CSV with raw numbers; the failed runs as a markdown list."""
from __future__ import annotations

import csv
import io
import os
from typing import Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from ..io import write_text
from .aggregate import Row
from .layout import Grid, Layout, csv_number, has_published, rows_grid
from .tasks import DEFAULT_TASK, task_metrics

CSV_FIELDS = ("dataset", "teacher", "student", "method", "hparams", "kind", "n", "n_failed", "seeds",
              "last_top1_mean", "last_top1_std", "best_top1_mean", "best_top1_std", "last_top5_mean",
              "delta_last_top1", "delta_best_top1", "published_top1", "published_kind", "published_runs",
              "published_source", "delta_last_published", "delta_best_published", "recipe")
LAYOUT_CSV_FIELDS = ("reference", "dataset", "teacher", "student", "method", "variant", "n", "n_failed",
                     "last_top1_mean", "last_top1_std", "best_top1_mean", "best_top1_std", "published_top1",
                     "published_spread", "published_kind", "published_runs", "published_recipe", "published_source")


# ----------------------------------------------------------------------------- any grid
def render_grid_rich(grid: Grid) -> Table:
    """A rich console table, notes as its caption, a rule after each section."""
    # Text everywhere: labels such as "[crd]" are not rich markup
    table = Table(title=grid.title, caption=Text("\n".join(grid.notes)) if grid.notes else None)
    for i, header in enumerate(grid.headers):
        # fold, never "…": a cell too wide for a narrow terminal wraps onto more lines
        table.add_column(Text(header), justify="left" if i in grid.text_columns else "right", overflow="fold")
    for i, line in enumerate(grid.body):
        table.add_row(*(Text(c) for c in line), end_section=i in grid.sections)
    return table


def print_table(table: Table, console: Console | None = None) -> None:
    """Print a rich table whole. A terminal keeps its width; elsewhere (a pipe, a log file, CI) rich would assume
    80 columns, so the table is printed as wide as its widest line needs."""
    console = console or Console()
    if console.is_terminal:
        console.print(table)
        return
    needed = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
    width = console.width
    console.width = max(width, needed)  # print() never renders wider than the console
    try:
        console.print(table)
    finally:
        console.width = width


def grid_markdown(grid: Grid, notes: bool = True) -> str:
    """A GitHub-flavoured markdown table, with its notes as a list under it when ``notes``."""
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


# ----------------------------------------------------------------------------- the default layout, ready made
def render_rich(rows: Sequence[Row], metric: str = "both") -> Table:
    """A rich table of the rows; a rule separates the teacher blocks."""
    return render_grid_rich(rows_grid(rows, metric, has_published(rows)))


def to_markdown(rows: Sequence[Row], metric: str = "both") -> str:
    """A GitHub-flavoured markdown table of the rows (published columns when the rows carry published numbers)."""
    published = has_published(rows)
    return grid_markdown(rows_grid(rows, metric, published), notes=published)


def to_latex(rows: Sequence[Row], metric: str = "both") -> str:
    """A booktabs LaTeX table of the rows (published columns when the rows carry published numbers)."""
    return grid_latex(rows_grid(rows, metric, has_published(rows)))


def csv_fields(task: str = DEFAULT_TASK) -> tuple[str, ...]:
    """The default layout's CSV columns for ``task``: classification's ``CSV_FIELDS``; otherwise mean and std of
    every metric, last and best (``last_ap_mean``, ...), the deltas and the published number on the primary metric."""
    spec = task_metrics(task)
    if spec.compact:
        return CSV_FIELDS
    primary = spec.primary[0]
    stats = tuple(f"{kind}_{m}_{s}" for kind in ("last", "best") for m in spec.names for s in ("mean", "std"))
    return (*CSV_FIELDS[:9], *stats, f"delta_last_{primary}", f"delta_best_{primary}", f"published_{primary}",
            *CSV_FIELDS[17:])


def to_csv(rows: Sequence[Row], path: str | os.PathLike) -> None:
    """Write all rows (of one task) with raw numbers (4 decimals, empty when missing) to ``path``, atomically."""
    task = rows[0].task if rows else DEFAULT_TASK
    if task_metrics(task).compact:
        return _classification_csv(rows, path)
    fields = csv_fields(task)
    names = task_metrics(task).names
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(fields)
    for r in rows:
        p = r.published
        stats = [csv_number(v) for kind in ("last", "best") for m in names for v in r.value(kind, m)]
        writer.writerow([r.dataset, r.teacher or "", r.student or "", r.method or "", r.label, r.kind,
                         r.n, r.n_failed, " ".join(map(str, r.seeds)), *stats,
                         csv_number(r.delta_last), csv_number(r.delta_best),
                         "" if p is None else p.value, "" if p is None else p.kind, "" if p is None else p.runs,
                         "" if p is None else f"[{p.table}] {p.source}",
                         csv_number(r.delta_last_pub), csv_number(r.delta_best_pub),
                         " ".join(f"{k}={v}" for k, v in r.recipe.items())])
    write_text(path, buf.getvalue())


def _classification_csv(rows: Sequence[Row], path: str | os.PathLike) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        p = r.published
        writer.writerow([r.dataset, r.teacher or "", r.student or "", r.method or "", r.label, r.kind,
                         r.n, r.n_failed, " ".join(map(str, r.seeds)),
                         csv_number(r.last_top1), csv_number(r.last_top1_std), csv_number(r.best_top1),
                         csv_number(r.best_top1_std), csv_number(r.last_top5), csv_number(r.delta_last),
                         csv_number(r.delta_best),
                         "" if p is None else p.top1, "" if p is None else p.kind, "" if p is None else p.runs,
                         "" if p is None else f"[{p.table}] {p.source}",
                         csv_number(r.delta_last_pub), csv_number(r.delta_best_pub),
                         " ".join(f"{k}={v}" for k, v in r.recipe.items())])
    write_text(path, buf.getvalue())


def failed_markdown(failed: Sequence[dict]) -> str:
    """The failed runs (:func:`~kdbench.results.aggregate.failed_runs`) as a markdown list, one line per run."""
    if not failed:
        return ""
    lines = [f"\nFailed runs ({len(failed)}, listed and counted, never averaged):\n"]
    for f in failed:
        who = f"{f['dataset']} {f['teacher'] or '—'} → {f['student']} {f['method']} seed {f['seed']}"
        reason = " ".join(str(f["failure"]).split())  # one line per run
        lines.append(f"- {who}: {reason} (after {f['epochs_run']} epochs; {f['path']})")
    return "\n".join(lines) + "\n"


# classification's paper-layout CSV names its numbers after top-1 (one metric, no metric column)
_TOP1_NAMES = {"last_mean": "last_top1_mean", "last_std": "last_top1_std", "best_mean": "best_top1_mean",
               "best_std": "best_top1_std", "published": "published_top1"}


def layout_csv(layout: Layout, path: str | os.PathLike) -> None:
    """Write a paper layout's long-format records (one line per method, pair, variant and metric) to ``path``,
    atomically."""
    buf = io.StringIO()
    if task_metrics(layout.task).compact:
        writer = csv.DictWriter(buf, LAYOUT_CSV_FIELDS, lineterminator="\n", extrasaction="ignore")
        records = [{_TOP1_NAMES.get(k, k): v for k, v in r.items()} for r in layout.records]
    else:
        fields = [f for f in LAYOUT_CSV_FIELDS if f not in _TOP1_NAMES.values()]
        fields[fields.index("n"):fields.index("n")] = ["metric"]
        fields[fields.index("n_failed") + 1:fields.index("n_failed") + 1] = list(_TOP1_NAMES)[:4]
        fields.insert(fields.index("published_spread"), "published")
        writer = csv.DictWriter(buf, fields, lineterminator="\n")
        records = layout.records
    writer.writeheader()
    writer.writerows(records)
    write_text(path, buf.getvalue())
