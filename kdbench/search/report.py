"""The search's ranking: a rich console table (printed whole where the output is not a terminal), markdown and CSV
(written atomically). The CSV is what ``kdbench-table --search-scores`` reads."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..io import write_text
from .space import Candidate

CSV_FIELDS = ("rank", "candidate", "score", "relation", "semantic", "params", "flops", "family", "depth", "width",
              "train", "dataset", "teacher", "teacher_source", "init", "batch_size", "seed")
HEADERS = ("#", "student", "score", "relation", "semantic", "params", "FLOPs", "train with")


@dataclass(frozen=True)
class Ranked:
    rank: int
    candidate: Candidate
    score: float
    relation: float
    semantic: float
    params: int
    flops: int


def rank(results: Sequence[tuple[Candidate, float, float, float, int, int]]) -> list[Ranked]:
    """Best score first (ties: fewer parameters, then the name)."""
    ordered = sorted(results, key=lambda r: (-r[1], r[4], r[0].name.lower()))
    return [Ranked(i, *r) for i, r in enumerate(ordered, start=1)]


def _cells(r: Ranked) -> list[str]:
    return [str(r.rank), r.candidate.name, f"{r.score:.6f}", f"{r.relation:.6f}", f"{r.semantic:.6f}",
            f"{r.params / 1e6:.3f} M", f"{r.flops / 1e6:.1f} M", " ".join(r.candidate.train_overrides)]


def rich_table(rows: Sequence[Ranked], title: str, notes: Sequence[str] = ()) -> Table:
    table = Table(title=Text(title), caption=Text("\n".join(notes)) if notes else None)
    for i, header in enumerate(HEADERS):
        table.add_column(Text(header), justify="left" if i in (1, 7) else "right", overflow="fold")
    for r in rows:
        table.add_row(*(Text(c) for c in _cells(r)))
    return table


def print_ranking(rows: Sequence[Ranked], title: str, notes: Sequence[str] = (),
                  console: Console | None = None) -> None:
    from ..results.render import print_table

    print_table(rich_table(rows, title, notes), console or Console())


def markdown(rows: Sequence[Ranked], title: str, notes: Sequence[str] = ()) -> str:
    esc = lambda s: s.replace("|", "\\|")
    lines = [f"# {title}", "", "| " + " | ".join(HEADERS) + " |",
             "|" + "|".join("---" if i in (1, 7) else "---:" for i in range(len(HEADERS))) + "|"]
    lines += ["| " + " | ".join(esc(c if i not in (1, 7) else f"`{c}`") for i, c in enumerate(_cells(r))) + " |"
              for r in rows]
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Ranked], path: Path, meta: dict) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        point = r.candidate.point
        writer.writerow({"rank": r.rank, "candidate": r.candidate.name, "score": repr(r.score),
                         "relation": repr(r.relation), "semantic": repr(r.semantic), "params": r.params,
                         "flops": r.flops, "family": point.family if point else "",
                         "depth": point.depth if point else "", "width": point.width if point else "",
                         "train": " ".join(r.candidate.train_overrides), **meta})
    write_text(path, buffer.getvalue())
