"""What a leaderboard shows: the rows and columns of a table (the default layout, or a reference's paper layout
with ours beside the published numbers), as a :class:`Grid` of strings that every renderer draws the same."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from . import reference as ref
from .aggregate import Row, published_method, variant_labels, variant_order
from .tasks import DEFAULT_TASK, TaskMetrics, task_metrics

METRICS = ("last", "best", "both")
TEXT_COLUMNS = ("Dataset", "Teacher", "Student", "Method")


class TableError(ValueError):
    """Bad input to kdbench-table: reported as one line, exit code 2."""


@dataclass
class Grid:
    """A rendered table: header, body (strings), which columns are text, notes printed under it."""

    headers: list[str]
    body: list[list[str]]
    text_columns: set[int] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    title: str = "kdbench leaderboard"
    sections: set[int] = field(default_factory=set)  # body indices after which a rule is drawn


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
    return _stat(cell.value, cell.spread) + (f" [{', '.join(tags)}]" if tags else "")


def _cap(label: str) -> str:
    return label[:1].upper() + label[1:]


def _columns(metric: str, published: bool = False,
             task: str = DEFAULT_TASK) -> list[tuple[str, Callable[[Row], str]]]:
    """(header, cell) pairs shared by the console, markdown and LaTeX tables; the metric columns are the task's
    (:mod:`.tasks`): per epoch kind, the primary metric and its Δ vs CE, then the others."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    spec = task_metrics(task)
    (primary, plabel), others = spec.primary, spec.metrics[1:]
    teacher = lambda r: r.kind == "teacher"
    stat = lambda kind, name: lambda r: _stat(*r.value(kind, name))
    cols = [
        ("Dataset", lambda r: r.dataset),
        ("Teacher", lambda r: r.teacher or "—"),
        ("Student", lambda r: r.student or "—"),
        ("Method", lambda r: "teacher" if teacher(r) else f"{r.method} ({r.label})" if r.label else r.method),
        ("n", lambda r: "" if teacher(r) else str(r.n)),
    ]
    for kind in ("last", "best"):
        if metric not in (kind, "both"):
            continue
        delta = (lambda r: _delta(r.delta_last)) if kind == "last" else (lambda r: _delta(r.delta_best))
        cols += [(f"{_cap(kind)} {plabel} (mean ± std)", stat(kind, primary)), (f"Δ {kind} vs CE", delta)]
        if not spec.compact:
            cols += [(f"{_cap(kind)} {label} (mean ± std)", stat(kind, name)) for name, label in others]
    if spec.compact:
        cols += [(f"{_cap(label)} (last, mean)", lambda r, n=name: _stat(r.value("last", n)[0], None))
                 for name, label in others]
    cols += [("failed", lambda r: "" if teacher(r) else str(r.n_failed))]
    if published:
        head = "Published [table]" if spec.compact else f"Published {plabel} [table]"
        cols += [(head, lambda r: _published(r.published))]
        if metric in ("last", "both"):
            cols += [("Δ last vs published", lambda r: _delta(r.delta_last_pub))]
        if metric in ("best", "both"):
            cols += [("Δ best vs published", lambda r: _delta(r.delta_best_pub))]
    return cols


def has_published(rows: Sequence[Row]) -> bool:
    """Whether any row carries a published number (then the published columns are shown)."""
    return any(r.published is not None for r in rows)


# ----------------------------------------------------------------------------- default layout
def rows_grid(rows: Sequence[Row], metric: str, published: bool) -> Grid:
    """The default layout: one line per row, the columns of ``metric`` (and the published ones). The rows are of
    one task (:func:`~kdbench.results.aggregate.by_task`); its metrics make the columns."""
    tasks = list(dict.fromkeys(r.task for r in rows)) or [DEFAULT_TASK]
    if len(tasks) > 1:
        raise ValueError(f"rows of several tasks ({', '.join(tasks)}) in one table; split them with by_task")
    spec = task_metrics(tasks[0])
    cols = _columns(metric, published, spec.task)
    body = [[cell(r) for _, cell in cols] for r in rows]
    sections = {i for i, r in enumerate(rows[:-1]) if rows[i + 1].kind == "teacher" or rows[i + 1].dataset != r.dataset}
    notes = [_stat_note(spec)]
    if published:
        notes += _source_notes([r.published for r in rows if r.published is not None])
    title = "kdbench leaderboard" if spec.task == DEFAULT_TASK else f"kdbench leaderboard: {spec.task}"
    return Grid([h for h, _ in cols], body, {i for i, (h, _) in enumerate(cols) if h in TEXT_COLUMNS}, notes,
                title=title, sections=sections)


def _stat_note(spec: TaskMetrics) -> str:
    plabel = spec.primary[1]
    if spec.compact:
        return (f"{plabel} in %, mean ± sample std (ddof=1) over completed runs; best-epoch and last-epoch {plabel} "
                "are separate columns; failed runs are counted, never averaged")
    labels = ", ".join(label for _, label in spec.metrics)
    return (f"{labels} in %, mean ± sample std (ddof=1) over completed runs; last = the final evaluation, best = the "
            f"evaluation with the best {plabel} (all its metrics); Δ vs CE on {plabel}; failed runs are counted, "
            "never averaged")


def _source_notes(cells) -> list[str]:
    tables = list(dict.fromkeys(c.table for c in cells))
    notes = ["published numbers: [table] names the reference table (kdbench-table --list-references); the epoch "
             "is not stated by the source unless marked best or last; Δ vs published compares the same epoch kind "
             "(both of ours when the source does not say)"]
    for name in tables:
        try:
            citation = ref.get_reference(name).citation + ": "
        except ValueError:  # a table built by the caller
            citation = ""
        sources = sorted({c.source for c in cells if c.table == name})
        notes.append(f"[{name}] {citation}" + "; ".join(sources))
    return notes


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
    task: str = DEFAULT_TASK


def _pair_label(pair: tuple[str, str, str]) -> str:
    return f"{pair[1]} → {pair[2]}"


def _short_pair_label(pair: tuple[str, str, str]) -> str:
    """The preset's pair name (res32x4_res8x4) when there is one, else ``teacher→student``."""
    return next((name for name, p in ref.PAIRS.items() if tuple(p) == tuple(pair)), f"{pair[1]}→{pair[2]}")


def reference_layout(rows: Sequence[Row], name: str, metric: str = "both") -> Layout:
    """Lay ``rows`` out as the reference ``name`` (a table, or a dataset's tables): one line per method (and per
    variant of ours), one column group per pair and metric the reference reports (ours last / best, published)."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    tables = ref.resolve_references(name)
    whole_dataset = not (len(tables) == 1 and tables[0].name == name)
    cells = [c for t in tables for c in t.cells if c.dataset == name or not whole_dataset]
    spec = task_metrics(tables[0].task)
    metrics = [m for m in spec.names if any(c.metric == m for c in cells)]
    many = len(metrics) > 1  # one column group per metric (detection's AP, AP50, ...); else as the papers' top-1
    recipes = ref.recipes()
    layout_recipes = [recipes[n] for n in dict.fromkeys(c.recipe for c in cells)]
    ref_pairs = list(dict.fromkeys((c.dataset, c.teacher, c.student) for c in cells))

    def in_pair(row: Row, pair) -> bool:
        return row.dataset == pair[0] and ref.same_model(row.student, pair[2]) and (
            row.kind == "ce" or ref.same_model(row.teacher, pair[1]))

    # ours: rows of the reference's task and pairs trained with one of its recipes
    ours, hidden = [], 0
    for r in rows:
        if r.kind == "teacher":
            continue
        if r.task == spec.task and any(in_pair(r, p) for p in ref_pairs) and \
                any(ref.recipe_compatible(x, r.recipe) for x in layout_recipes):
            ours.append(r)
        else:
            hidden += 1
    # a table: all its pairs, like the paper; a dataset: the pairs we ran
    pairs = ref_pairs if not whole_dataset else [p for p in ref_pairs if any(in_pair(r, p) and r.kind == "method"
                                                                                 for r in ours)]
    teacher_rows = [r for r in rows if r.kind == "teacher" and r.task == spec.task]
    published: dict[tuple, object] = {}
    for c in cells:  # the first cell in precedence order wins
        key = (c.dataset, c.teacher, c.student, c.method) if c.method != "ce" else (c.dataset, None, c.student, "ce")
        published.setdefault(key + (c.metric,), c)

    def cell_for(method: str, pair, m: str):
        if method == "ce":
            return next((c for k, c in published.items() if k[3] == "ce" and k[0] == pair[0] and k[4] == m
                         and ref.same_model(k[2], pair[2])), None)
        return published.get((pair[0], pair[1], pair[2], method, m))

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
        for r, (label, values) in zip(members, variant_labels(members)):
            order[(key, label)] = variant_order(values)
            for p in pairs:
                if in_pair(r, p):
                    shown.setdefault((key, label), {})[p] = r
    ref_methods = list(dict.fromkeys(c.method for c in cells))
    ours_keys = list(by_key)
    methods = [m for m in ref_methods if not whole_dataset or m in ours_keys] + \
              [m for m in ours_keys if m not in ref_methods]
    has_teacher = any(cell_for("teacher", p, m) or teacher_row(p) for p in pairs for m in metrics)
    has_ce = "ce" in ours_keys or any(cell_for("ce", p, m) for p in pairs for m in metrics)
    methods = (["teacher"] if has_teacher else []) + (["ce"] if has_ce else []) + \
              [m for m in methods if m not in ("teacher", "ce")]
    lines = []
    for m in methods:
        variants = [k for k in shown if k[0] == m] or [(m, "")]
        lines += sorted(variants, key=lambda k: order.get(k, ()))

    headers, text_cols = ["Method"], {0}
    compact_headers, compact_body = ["Method"], []
    for p in pairs:
        for m in metrics:
            label = _pair_label(p) + (f": {spec.label(m)}" if many else "")
            compact_headers.append(_short_pair_label(p) + (f" {spec.label(m)}" if many else ""))
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
            for i, m in enumerate(metrics):
                if key == "teacher":
                    row = teacher_row(p)
                    ours_last = ours_best = _stat(row.value("last", m)[0], None) if row else ""
                else:
                    row = shown.get((key, variant), {}).get(p)
                    n = f" (n={row.n})" if row and row.n != 1 and i == 0 else ""
                    ours_last = _stat(*row.value("last", m)) + n if row else ""
                    ours_best = _stat(*row.value("best", m)) if row else ""
                c = cell_for(key, p, m)
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
                    mean = lambda kind: csv_number(row.value(kind, m)[0]) if row else ""
                    std = lambda kind: csv_number(row.value(kind, m)[1]) if row and key != "teacher" else ""
                    records.append({
                        "reference": name, "dataset": p[0], "teacher": p[1], "student": p[2], "method": key,
                        "variant": variant, "metric": m, "n": "" if row is None or key == "teacher" else row.n,
                        "n_failed": "" if row is None or key == "teacher" else row.n_failed,
                        "last_mean": mean("last"), "last_std": std("last"),
                        "best_mean": mean("best"), "best_std": std("best"),
                        "published": "" if c is None else c.value,
                        "published_spread": "" if c is None or c.spread is None else c.spread,
                        "published_kind": "" if c is None else c.kind, "published_runs": "" if c is None else c.runs,
                        "published_recipe": "" if c is None else c.recipe,
                        "published_source": "" if c is None else f"[{c.table}] {c.source}"})
        body.append(line)
        compact_body.append(compact)
    what = spec.label(metrics[0]) if not many else ", ".join(spec.label(m) for m in metrics)
    notes = [f"reference '{name}': ours = mean ± sample std over completed runs (n = runs when not 1); teacher = "
             f"its measured {what}; best-epoch and last-epoch {what} in separate columns"]
    used = [c for c in (cell_for(k, p, m) for k, _ in lines for p in pairs for m in metrics) if c is not None]
    notes += _source_notes(used)
    if hidden:
        notes.append(f"{hidden} of our rows are not shown: their task, pair or training recipe is not in this reference")
    title = f"kdbench vs {name}"
    compact_notes = ["L = ours, last epoch; B = ours, best epoch; P = published"] + notes
    placed = {id(r): r for per_pair in shown.values() for r in per_pair.values()}
    teachers = [t for t in teacher_rows if any(t.dataset == p[0] and ref.same_model(t.teacher, p[1]) for p in pairs)]
    return Layout(Grid(headers, body, text_cols, notes, title=title), records, pairs, hidden,
                  compact=Grid(compact_headers, compact_body, {0}, compact_notes, title=title), shown=len(placed),
                  rows=teachers + [r for r in rows if id(r) in placed], task=spec.task)


def csv_number(x) -> str | float:
    """A number as the CSV files hold it: 4 decimals, empty when missing."""
    return "" if x is None else round(x, 4)
