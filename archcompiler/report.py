"""`Report` -> text: a rich tree table, JSON, CSV or Markdown.

In: a `Report` from `analysis.analyze`, a depth (rows nested deeper are
folded into their block's row, whose figures already include them;
`MODULES`, the table's default, shows every row down to the outermost block
instances) and the units (`raw`: exact integers; `si`: three significant
digits with K, M, G, and bytes in kB, MB, GB).  The count is `macs` or
`flops` (FLOPs = 2 x MACs, always labelled FLOPs).  Out: a string (or, for
the table, a rich renderable fitted to a width).  Every rendering states
the counting conventions.  No torch.

The table's width: the chosen columns (`--columns`) are kept as asked;
the default ones are fitted to the width by `FIT_STEPS`, in that order,
until the table fits: drop `buffers`, drop `RF / jump`, print the numbers
with SI prefixes, drop `act. memory`, drop `op / block`.  Name, output,
params and MACs always stay, and no cell is ever cut with an ellipsis: a
cell too wide for what is left folds onto a second line.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any, Callable, Container, Optional, Union

from .analysis import Report, Row, conventions
from .errors import UserError
from .ops import fmt_shape

FORMATS = ("table", "json", "csv", "markdown", "latex")
UNITS = ("raw", "si")
COUNTS = ("macs", "flops")
COLUMNS = ("name", "kind", "op", "output_shape", "params", "buffers", "macs", "activations", "activation_bytes",
           "receptive_field", "jump", "train_only")
MODULES = "modules"  # the table's default depth: every row down to the outermost block instances
Depth = Union[int, str, None]  # a depth, MODULES, or None (every row)


def visible(report: Report, depth: Depth) -> list[Row]:
    if depth is None:
        return list(report.rows)
    if depth == MODULES:
        blocks = [r.name + "." for r in report.rows if r.kind == "block"]
        return [r for r in report.rows if not any(r.name.startswith(b) for b in blocks)]
    return [r for r in report.rows if r.depth <= depth]


def _sig3(x: float) -> str:
    return f"{x:#.3g}".rstrip(".")  # three significant digits, trailing zeros kept: 13.0, 1.50, 100


def count(n: int, units: str = "raw") -> str:
    """A count: 13,004,888 (raw) or 13.0M (si)."""
    if units == "raw" or abs(n) < 1000:
        return f"{n:,}"
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            return f"{_sig3(n / scale)}{suffix}"
    raise AssertionError("unreachable")


def si(n: float, unit: str) -> str:
    """A quantity with the SI prefix that suits it: 2.10 MMACs, 1.81 GFLOPs, 840 MACs, 52.0 MB."""
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{_sig3(n / scale)} {prefix}{unit}"
    return f"{n:,} {unit}"


def size(n: int, units: str = "raw") -> str:
    """A number of bytes: 52,019,552 (raw) or 52.0 MB (si, powers of 1000)."""
    if units == "raw":
        return f"{n:,}"
    return si(n, "B")


def field(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


@dataclass(frozen=True)
class Measure:
    """What the MACs column counts: MACs as they are, or FLOPs = 2 x MACs, each under its own name."""

    name: str  # "MACs" or "FLOPs"
    factor: int

    def of(self, macs: int) -> int:
        return macs * self.factor


def measure(kind: str = "macs") -> Measure:
    if kind not in COUNTS:
        raise UserError(f"--count must be macs or flops, got '{kind}'")
    return Measure("FLOPs", 2) if kind == "flops" else Measure("MACs", 1)


def outputs_line(report: Report) -> str:
    """`outputs: layer2 512 channels at stride 8, ...` (stride in input pixels, for maps)."""
    parts = []
    for name, shape in report.outputs.items():
        if len(shape) == 3:
            parts.append(f"{name} {shape[0]} channels at stride {field(report.output_strides.get(name, (1, 1)))} "
                         f"({fmt_shape(shape)})")
        else:
            parts.append(f"{name} {fmt_shape(shape)}")
    return "outputs: " + "; ".join(parts)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


def totals_line(report: Report, units: str = "raw", count_as: str = "macs") -> str:
    """The totals, each with its unit: params, buffer values, MACs (or FLOPs) and bytes."""
    m = measure(count_as)
    batch = f", batch {report.batch}" if report.batch != 1 else ""
    work = m.of(report.total_macs)
    if units == "raw":
        params = f"{_plural(report.total_params, 'param')}, {_plural(report.total_buffers, 'buffer value')}"
        macs = f"{work:,} {m.name} ({si(work, m.name)})"
        mem = f"{report.activation_bytes:,} bytes ({si(report.activation_bytes, 'B')})"
        model = f"{report.model_bytes(4):,} bytes ({si(report.model_bytes(4), 'B')}) fp32"
    else:
        params = f"{count(report.total_params, 'si')} params, {count(report.total_buffers, 'si')} buffer values"
        macs = si(work, m.name)
        mem = si(report.activation_bytes, "B")
        model = f"{si(report.model_bytes(4), 'B')} fp32"
    train = (f" (+{si(m.of(report.train_only_macs), m.name)} in training-only layers)"
             if report.train_only_macs else "")
    flops = " (FLOPs = 2 x MACs)" if m.factor == 2 else ""
    if report.counting is not None:  # --include / --like: say what the count holds
        flops += f" ({report.counting.describe()})"
    return (
        f"total: {params}; {macs}{flops}{train} in eval mode{batch}; "
        f"activation memory {mem} at fp32; model size {model}, "
        f"{si(report.model_bytes(2), 'B')} fp16, {si(report.model_bytes(1), 'B')} int8"
    )


# ------------------------------------------------------------------------------------ the table's columns


@dataclass(frozen=True)
class Column:
    id: str
    header: str  # `{m}` is the measure's name (MACs or FLOPs)
    justify: str
    cell: Callable[[Report, Row, str, Measure], str]  # (report, row, units, measure) -> text
    total: Callable[[Report, str, Measure], str] = lambda rep, units, m: ""


def _act(rep: Report, r: Row, units: str, m: Measure) -> str:
    return size(r.activations * rep.BYTES_PER_ACTIVATION, units)


def _percent(rep: Report, r: Row, units: str, m: Measure) -> str:
    return f"{100 * r.params / rep.total_params:.1f}%" if rep.total_params else "0.0%"


TABLE_COLUMNS = {c.id: c for c in (
    Column("name", "name", "left", lambda rep, r, u, m: ""),  # filled with the tree guides
    Column("op", "op / block", "left", lambda rep, r, u, m: r.label),
    Column("output", "output", "right", lambda rep, r, u, m: fmt_shape(r.output_shape)),
    Column("kernel", "kernel", "right", lambda rep, r, u, m: "x".join(map(str, r.kernel)) if r.kernel else ""),
    Column("params", "params", "right", lambda rep, r, u, m: count(r.params, u),
           lambda rep, u, m: count(rep.total_params, u)),
    Column("params_percent", "params %", "right", _percent, lambda rep, u, m: "100%"),
    Column("buffers", "buffers", "right", lambda rep, r, u, m: count(r.buffers, u),
           lambda rep, u, m: count(rep.total_buffers, u)),
    Column("macs", "{m}", "right", lambda rep, r, u, m: count(m.of(r.macs), u),
           lambda rep, u, m: count(m.of(rep.total_macs), u)),
    Column("act", "act. memory", "right", _act, lambda rep, u, m: size(rep.activation_bytes, u)),
    Column("rf", "RF / jump", "right", lambda rep, r, u, m: f"{field(r.rf)} / {field(r.jump)}"),
)}
# torchinfo's column ids (and a few spelled-out names) for archc's.
COLUMN_ALIASES = {"output_size": "output", "num_params": "params", "mult_adds": "macs", "flops": "macs",
                  "kernel_size": "kernel", "params_percent": "params_percent", "activations": "act",
                  "act_memory": "act", "receptive_field": "rf", "op_block": "op", "block": "op"}
DEFAULT_COLUMNS = ("name", "op", "output", "params", "buffers", "macs", "act", "rf")
# How the default columns fit a narrow terminal, in this order, until the table fits.
FIT_STEPS = (("drop", "buffers"), ("drop", "rf"), ("si", None), ("drop", "act"), ("drop", "op"))


def choose_columns(text: Optional[str], known: Container[str], aliases: dict[str, str], unknown: str,
                   hint: str) -> Optional[tuple[str, ...]]:
    """A `--columns` list: its words (ids of `known`, or `aliases` of them) as ids, in the order given, each
    once, "name" first; None for None.  A word that is neither: a `UserError` "--columns: no {unknown} 'X'"."""
    if text is None:
        return None
    chosen = []
    for word in (w.strip().lower() for w in text.split(",")):
        if not word:
            continue
        cid = aliases.get(word, word)
        if cid not in known:
            raise UserError(f"--columns: no {unknown} '{word[:40]}'", hint=hint)
        if cid not in chosen and cid != "name":
            chosen.append(cid)
    return ("name", *chosen)  # the name always comes first


def parse_columns(text: Optional[str]) -> Optional[tuple[str, ...]]:
    """`"output_size,num_params,mult_adds"` -> ("name", "output", "params", "macs"); None: the default."""
    return choose_columns(text, TABLE_COLUMNS, COLUMN_ALIASES, "column",
                          "choose from " + ", ".join(TABLE_COLUMNS) + " (or torchinfo's output_size, "
                          "num_params, mult_adds, params_percent, kernel_size)")


def to_json(report: Report, depth: Depth = None, count_as: str = "macs") -> str:
    data = report.to_dict()
    if depth is not None:
        names = {r.name for r in visible(report, depth)}
        data["nodes"] = [n for n in data["nodes"] if n["name"] in names]
    if measure(count_as).factor == 2:  # FLOPs beside the MACs, each under its own name
        data["count"] = "flops"
        data["total_flops"] = 2 * report.total_macs
        data["train_only_flops"] = 2 * report.train_only_macs
        for n in data["nodes"]:
            n["flops"] = 2 * n["macs"]
    return json.dumps(data, indent=2)


def to_csv(report: Report, depth: Depth = None, count_as: str = "macs") -> str:
    flops = measure(count_as).factor == 2
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS + (("flops",) if flops else ()))
    for r in visible(report, depth):
        writer.writerow([r.name, r.kind, r.op, fmt_shape(r.output_shape), r.params, r.buffers, r.macs,
                         r.activations, r.activations * report.BYTES_PER_ACTIVATION, field(r.rf), field(r.jump),
                         str(r.train_only).lower()] + ([2 * r.macs] if flops else []))
    return out.getvalue()


def to_markdown(report: Report, depth: Depth = None, units: str = "raw", count_as: str = "macs") -> str:
    m = measure(count_as)
    lines = [
        f"**{report.title or report.name}** — input {fmt_shape(report.input)}",
        "",
        f"| name | op | output | params | buffers | {m.name} | activation memory | RF / jump |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in visible(report, depth):
        name = "&nbsp;&nbsp;" * (r.depth - 1) + f"`{r.name}`" + (" (train only)" if r.train_only else "")
        lines.append(
            f"| {name} | {r.label} | {fmt_shape(r.output_shape)} | {count(r.params, units)} | "
            f"{count(r.buffers, units)} | {count(m.of(r.macs), units)} | "
            f"{size(r.activations * report.BYTES_PER_ACTIVATION, units)} | {field(r.rf)} / {field(r.jump)} |"
        )
    lines.append(
        f"| **total** | | | **{count(report.total_params, units)}** | **{count(report.total_buffers, units)}** | "
        f"**{count(m.of(report.total_macs), units)}** | **{size(report.activation_bytes, units)}** | |"
    )
    lines += ["", totals_line(report, units, count_as) + ".", "", outputs_line(report) + ".", "",
              f"_{conventions(report.counting)}._", ""]
    return "\n".join(lines)


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "\u2026": r"\ldots{}", "\u2212": "-", "\u2014": "---", "\u00d7": r"$\times$",
                  "\u0394": r"$\Delta$", "\u2192": r"$\rightarrow$"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(headers: list[str], align: str, rows: list[list[str]], *, total: Optional[list[str]] = None,
                caption: str = "", notes: tuple[str, ...] = (), raw_first: bool = False) -> str:
    """A booktabs table (`\\usepackage{booktabs}`): toprule, header, midrule, rows, [midrule, total], bottomrule.

    Cells are escaped; with `raw_first` the first column is LaTeX already (indentation).
    """
    def line(cells: list[str], bold: bool = False) -> str:
        out = [c if (i == 0 and raw_first) else latex_escape(c) for i, c in enumerate(cells)]
        if bold:
            out = [rf"\textbf{{{c}}}" if c else "" for c in out]
        return " & ".join(out) + r" \\"

    lines = [r"\begin{table}[htbp]", r"\centering", r"\small"]
    if caption:
        lines.append(rf"\caption{{{latex_escape(caption)}}}")
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", line(headers), r"\midrule"]
    lines += [line(r) for r in rows]
    if total is not None:
        lines += [r"\midrule", line(total, bold=True)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    for note in notes:
        lines.append(rf"\par\smallskip{{\footnotesize {latex_escape(note)}\par}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_latex(report: Report, depth: Depth = MODULES, units: str = "raw", count_as: str = "macs") -> str:
    """The summary as a booktabs table; nesting is indentation, the totals and conventions are notes."""
    m = measure(count_as)
    rows = []
    for r in visible(report, depth):
        tail = r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name
        name = r"\quad " * (r.depth - 1) + r"\texttt{" + latex_escape(tail) + "}" + (r"$^*$" if r.train_only else "")
        rows.append([name, r.label, fmt_shape(r.output_shape), count(r.params, units), count(r.buffers, units),
                     count(m.of(r.macs), units), size(r.activations * report.BYTES_PER_ACTIVATION, units),
                     f"{field(r.rf)} / {field(r.jump)}"])
    total = ["total", "", "", count(report.total_params, units), count(report.total_buffers, units),
             count(m.of(report.total_macs), units), size(report.activation_bytes, units), ""]
    notes = [totals_line(report, units, count_as) + ".", outputs_line(report) + "."]
    if any(r.train_only for r in visible(report, depth)):
        notes.append("* runs in training mode only.")
    return latex_table(["name", "op / block", "output", "params", "buffers", m.name, "act. memory", "RF / jump"],
                       "llrrrrrr", rows, total=total,
                       caption=f"{report.title or report.name} (input {fmt_shape(report.input)})",
                       notes=(*notes, conventions(report.counting) + "."), raw_first=True)


def tree_prefixes(rows: list[Row]) -> list[str]:
    """Tree guides (├─ └─ │) for rows in pre-order with their depths."""
    prefixes = []
    for i, row in enumerate(rows):
        parts = []
        for level in range(1, row.depth):
            # Is there a later row at `level + 1` before the tree climbs above `level`?
            last = True
            for later in rows[i + 1:]:
                if later.depth <= level:
                    break
                if later.depth == level + 1:
                    last = False
                    break
            if level == row.depth - 1:
                parts.append("└─ " if last else "├─ ")
            else:
                parts.append("   " if last else "│  ")
        prefixes.append("".join(parts))
    return prefixes


def _build_table(report: Report, rows: list[Row], columns: tuple[str, ...], units: str, m: Measure,
                 overflow: str = "ellipsis"):
    from rich.table import Table

    batch = f", batch {report.batch}" if report.batch != 1 else ""
    table = Table(title=f"{report.title or report.name}  (input {fmt_shape(report.input)}{batch})",
                  title_justify="left")
    cols = [TABLE_COLUMNS[c] for c in columns]
    for col in cols:
        table.add_column(col.header.format(m=m.name), justify=col.justify, no_wrap=overflow != "fold",
                         overflow=overflow)
    for r, prefix in zip(rows, tree_prefixes(rows)):
        style = "bold" if r.kind == "block" else ("dim" if r.train_only else None)
        name = prefix + (r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name)
        name += " *" if r.train_only and r.kind != "layer" else ""
        table.add_row(*[name if col.id == "name" else col.cell(report, r, units, m) for col in cols], style=style)
    table.add_section()
    table.add_row(*["total" if col.id == "name" else col.total(report, units, m) for col in cols], style="bold")
    return table


def width_of(table) -> int:
    from rich.console import Console
    from rich.measure import Measurement

    wide = Console(width=10_000, file=io.StringIO())
    return Measurement.get(wide, wide.options, table).maximum


def fit_to_width(build: Callable[..., Any], columns: list[str], units: str, steps: tuple, width: Optional[int],
                 header: Callable[[str], str], keep_columns: bool = False) -> tuple[Any, list[str]]:
    """A rich table no wider than `width` (None: as built), and what was done to fit it, in words.

    `build(columns, units[, overflow])` makes the table.  While it is too wide, `steps` are taken in order:
    ("drop", id or tuple of ids) leaves those columns out (not when `keep_columns`: columns a user chose
    stay), ("si", None) writes numbers with SI prefixes; past the last step it wraps ("fold"), never cuts.
    One loop for every table archc fits: the summary's, `--train`'s and the diff's."""
    table = build(tuple(columns), units)
    notes: list[str] = []
    if width is None or width_of(table) <= width:
        return table, notes
    for action, what in steps:
        if action == "si" and units == "raw":
            units = "si"
            notes.append("numbers with SI prefixes")
        elif action == "drop" and not keep_columns:
            gone = [c for c in (what if isinstance(what, tuple) else (what,)) if c in columns]
            if not gone:
                continue
            columns = [c for c in columns if c not in gone]
            notes.append(" and ".join(f"'{header(c)}'" for c in gone) + " left out")
        else:
            continue
        table = build(tuple(columns), units)
        if width_of(table) <= width:
            return table, notes
    return build(tuple(columns), units, "fold"), notes


def to_table(report: Report, depth: Depth = MODULES, units: str = "raw", *, width: Optional[int] = None,
             columns: Optional[tuple[str, ...]] = None, count_as: str = "macs"):  # -> rich.console.Group
    """The tree table, fitted to `width` columns by `FIT_STEPS` (the default columns) or as chosen,
    then the totals, outputs and conventions (a rich Group of the table and the notes)."""
    m = measure(count_as)
    asked = units  # the totals stay as asked: they wrap, and are never abbreviated
    rows = visible(report, depth)
    table, notes = fit_to_width(
        lambda cols, u, overflow="ellipsis": _build_table(report, rows, cols, u, m, overflow=overflow),
        list(columns or DEFAULT_COLUMNS), units, FIT_STEPS, width, lambda c: TABLE_COLUMNS[c].header,
        keep_columns=columns is not None)
    foot = ["* runs in training mode only"] if any(r.train_only for r in rows) else []
    if notes:
        foot.append(f"to fit {width} columns: {', '.join(notes)} (--columns chooses; a wider terminal or "
                    "COLUMNS=N shows more)")
    from rich.console import Group
    from rich.text import Text

    # The notes wrap at the console's width, not the (perhaps narrowed) table's.
    notes_text = "\n".join([totals_line(report, asked, count_as) + ".", outputs_line(report) + ".", *foot,
                            conventions(report.counting) + "."])
    return Group(table, Text(notes_text))
