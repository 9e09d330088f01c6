"""``kdbench-table``: aggregate result.json files into a leaderboard (console, markdown, csv)."""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from kdbench.results.aggregate import Row, aggregate, find_results

METRICS = ("last", "best", "both")
CSV_FIELDS = ("dataset", "teacher", "student", "method", "hparams", "kind", "n", "n_failed", "seeds",
              "last_top1_mean", "last_top1_std", "best_top1_mean", "best_top1_std", "last_top5_mean",
              "delta_last_top1", "delta_best_top1")


def _stat(mean: float | None, std: float | None) -> str:
    if mean is None:
        return ""
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _delta(d: float | None) -> str:
    return "" if d is None else f"{d:+.2f}"


def _columns(metric: str) -> list[tuple[str, Callable[[Row], str]]]:
    """(header, cell) pairs shared by the console and markdown tables."""
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
    return cols


def render_rich(rows: Sequence[Row], metric: str = "both") -> Table:
    """A rich table of the rows; a rule separates the teacher blocks."""
    cols = _columns(metric)
    table = Table(title="kdbench leaderboard", caption="top-1 in %, mean ± sample std (ddof=1) over seeds")
    for header, _ in cols:
        table.add_column(header, justify="left" if header in ("Dataset", "Teacher", "Student", "Method") else "right")
    for i, row in enumerate(rows):
        nxt = rows[i + 1] if i + 1 < len(rows) else None
        end = nxt is not None and (nxt.kind == "teacher" or nxt.dataset != row.dataset)
        table.add_row(*(Text(cell(row)) for _, cell in cols),  # Text: no markup parsing of labels
                      style="italic" if row.kind == "teacher" else None, end_section=end)
    return table


def to_markdown(rows: Sequence[Row], metric: str = "both") -> str:
    """A GitHub-flavoured markdown table of the rows."""
    cols = _columns(metric)
    esc = lambda s: s.replace("|", "\\|")
    lines = ["| " + " | ".join(h for h, _ in cols) + " |",
             "|" + "|".join("---" if h in ("Dataset", "Teacher", "Student", "Method") else "---:" for h, _ in cols) + "|"]
    lines += ["| " + " | ".join(esc(cell(r)) for _, cell in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[Row], path: str | os.PathLike) -> None:
    """Write all rows with raw numbers (4 decimals, empty when missing) to ``path``, atomically."""
    num = lambda x: "" if x is None else round(x, 4)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for r in rows:
        writer.writerow([r.dataset, r.teacher or "", r.student or "", r.method or "", r.label, r.kind,
                         r.n, r.n_failed, " ".join(map(str, r.seeds)),
                         num(r.last_top1), num(r.last_top1_std), num(r.best_top1), num(r.best_top1_std),
                         num(r.last_top5), num(r.delta_last), num(r.delta_best)])
    _write_atomic(Path(path), buf.getvalue())


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdbench-table", description="Aggregate kdbench result.json files into a leaderboard.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="run directories, sweep roots or result.json files")
    parser.add_argument("--out", type=Path, help="where to write leaderboard.md/.csv (default: first PATH if a directory, else cwd)")
    parser.add_argument("--dataset", help="only this dataset")
    parser.add_argument("--method", nargs="+", action="extend", metavar="M", help="only these methods (teacher/CE rows kept as context)")
    parser.add_argument("--metric", choices=METRICS, default="both", help="which top-1 to show (default: both)")
    args = parser.parse_args(argv)

    records = find_results(args.paths)
    if args.dataset is not None:
        records = [r for r in records if r["dataset"]["name"] == args.dataset]
    rows = aggregate(records, methods=args.method)
    if not rows:
        what = "no kdbench results" + (f" for dataset {args.dataset}" if args.dataset else "") + \
               (f" for methods {' '.join(args.method)}" if args.method else "")
        print(f"kdbench-table: {what} found in: {', '.join(args.paths)}", file=sys.stderr)
        return 2

    out = args.out or (Path(args.paths[0]) if Path(args.paths[0]).is_dir() else Path.cwd())
    console = Console()
    console.print(render_rich(rows, args.metric))
    _write_atomic(out / "leaderboard.md", to_markdown(rows, args.metric))
    to_csv(rows, out / "leaderboard.csv")
    console.print(f"wrote {out / 'leaderboard.md'} and {out / 'leaderboard.csv'}", highlight=False, markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
