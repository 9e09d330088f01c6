"""``kdbench-table``: aggregate result.json files into a leaderboard beside the published numbers.

Outputs: a rich console table, markdown, CSV, LaTeX (booktabs) and a PNG plot (with the runs' learning curves
beside it, ``<name>-curves.png``), optionally uploaded to W&B.
Two layouts: one line per (dataset, teacher, student, method, differing settings) (the default), or, with
``--reference NAME``, the paper's layout: methods x teacher-student pairs, ours beside the published number.
Best-epoch and last-epoch numbers are separate, labelled columns everywhere; failed runs are listed, never averaged.
``--search-scores ranking.csv`` adds Spearman's rank correlation between a ``kdbench-search`` ranking and the trained
accuracy of the searched students (:mod:`.search_scores`).
One table per task (classification: top-1 / top-5; detection: COCO box AP, AP50, ... ; :mod:`.tasks`), files
``leaderboard.*`` for classification and ``leaderboard-<task>.*`` for the others.
This module is the command line only: reading and grouping is :mod:`.aggregate`, what a table shows
:mod:`.layout`, drawing it :mod:`.render`, :mod:`.plot` and :mod:`.upload`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..io import write_text
from .aggregate import aggregate, board_stem, by_task, failed_runs, find_results, with_published
from .layout import METRICS, TableError, has_published, reference_layout, rows_grid
from .plot import plot_curves, plot_png
from .reference import ReferenceError, list_references, pair as parse_pair, resolve_references, same_model
from .render import failed_markdown, grid_latex, grid_markdown, layout_csv, print_table, render_grid_rich, to_csv
from .search_scores import correlation_grid, correlations, read_scores, write_correlation_csv
from .upload import upload_wandb

FORMATS = ("md", "csv", "tex", "png")


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
    p.add_argument("--search-scores", nargs="+", action="extend", type=Path, metavar="CSV",
                   help="kdbench-search ranking.csv files: also report Spearman's rank correlation between their "
                        "scores and the trained accuracy of the searched students (file search-correlation.*)")
    p.add_argument("--list-references", action="store_true", help="list the reference tables and exit")
    p.add_argument("--wandb", action="store_true", help="also log the table (and plot) as a W&B run")
    p.add_argument("--wandb-project", default="kdbench", help="W&B project (default: kdbench)")
    p.add_argument("--wandb-mode", choices=("offline", "online"), default="offline",
                   help="offline (default: no login needed; `wandb sync` uploads later) or online")
    return p


def _select(records: list[dict], args) -> list[dict]:
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
    table = Table(title="kdbench reference tables (kdbench-table PATH --reference NAME, or a dataset name for "
                        "all its combinable tables)")
    for h in ("name", "datasets", "cells", "what, from where"):
        table.add_column(h)
    for ref in list_references():
        table.add_row(ref.name, ", ".join(ref.datasets) + ("" if ref.combine else "\n(own recipe)"),
                      str(len(ref.cells)), Text(f"{ref.title}\n{ref.citation}\n{ref.url}"))
    print_table(table, console)


def main(argv: Sequence[str] | None = None) -> int:
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
    references = resolve_references(args.reference) if args.reference else None  # bad names fail before any work
    score_sets = [read_scores(path) for path in args.search_scores or []]  # and unreadable score files
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
        boards = [(layout.task, layout, layout.grid, f"leaderboard-{args.reference}", layout.rows)]
    else:  # one table per task: classification and detection rows never share columns
        boards = [(task, None, rows_grid(part, args.metric, has_published(part)), board_stem(task), part)
                  for task, part in by_task(rows).items()]

    written = []
    for task, layout, grid, stem, board_rows in boards:
        board_failed = [f for f in failed if f["task"] == task]
        print_table(render_grid_rich(layout.compact if layout else grid), console)
        if board_failed:
            console.print(failed_markdown(board_failed), highlight=False, markup=False, soft_wrap=True)
        files = []
        if "md" in formats:
            write_text(out / f"{stem}.md", grid_markdown(grid, notes=bool(layout) or has_published(board_rows))
                       + failed_markdown(board_failed))
            files.append(out / f"{stem}.md")
        if "csv" in formats:
            layout_csv(layout, out / f"{stem}.csv") if layout else to_csv(board_rows, out / f"{stem}.csv")
            files.append(out / f"{stem}.csv")
        if "tex" in formats:
            write_text(out / f"{stem}.tex", grid_latex(grid))
            files.append(out / f"{stem}.tex")
        if "png" in formats:
            plot_png(board_rows, out / f"{stem}.png", args.metric, title=grid.title)
            files.append(out / f"{stem}.png")
            curves = plot_curves(records, board_rows, out / f"{stem}-curves.png", title=grid.title)
            if curves is not None:  # the learning curves, where the runs' histories have some
                files.append(curves)
        if args.wandb:
            where = upload_wandb(grid, out, [p for p in files if p.suffix == ".png"], args.wandb_project,
                                 args.wandb_mode, stem)
            console.print(f"W&B ({args.wandb_mode}): {where}", highlight=False, markup=False, soft_wrap=True)
        written += files
    if score_sets:
        written += _search_correlations(rows, score_sets, formats, out, console)
    if written:
        console.print("wrote " + ", ".join(map(str, written)), highlight=False, markup=False, soft_wrap=True)
    return 0


def _search_correlations(rows, score_sets, formats, out: Path, console: Console) -> list[Path]:
    """Print (and write as search-correlation.md / .csv) the rank correlation of each search's scores with the
    trained accuracy of its students; the files written."""
    found = correlations(rows, score_sets)
    if not found:
        console.print("search scores: no setting has trained runs of two or more of the scored students "
                      f"({', '.join(s.source for s in score_sets)})", highlight=False, markup=False, soft_wrap=True)
        return []
    grid = correlation_grid(found)
    print_table(render_grid_rich(grid), console)
    files = []
    if "md" in formats:
        write_text(out / "search-correlation.md", grid_markdown(grid))
        files.append(out / "search-correlation.md")
    if "csv" in formats:
        write_correlation_csv(found, out / "search-correlation.csv")
        files.append(out / "search-correlation.csv")
    return files


if __name__ == "__main__":
    sys.exit(main())
