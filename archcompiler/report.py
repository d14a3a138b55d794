"""`Report` -> text: a rich tree table, JSON, CSV or Markdown.

In: a `Report` from `analysis.analyze`, a depth (rows nested deeper are
folded into their block's row, whose figures already include them) and the
units (`raw`: exact integers; `si`: three significant digits with K, M, G,
and bytes in kB, MB, GB).  Out: a string (or, for the table, a rich
renderable).  Every rendering states the counting conventions.  No torch.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Optional

from .analysis import Report, Row, conventions
from .ops import fmt_shape

FORMATS = ("table", "json", "csv", "markdown")
UNITS = ("raw", "si")
COLUMNS = ("name", "kind", "op", "output_shape", "params", "buffers", "macs", "activations", "activation_bytes",
           "receptive_field", "jump", "train_only")


def visible(report: Report, depth: Optional[int]) -> list[Row]:
    return [r for r in report.rows if depth is None or r.depth <= depth]


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


def size(n: int, units: str = "raw") -> str:
    """A number of bytes: 52,019,552 (raw) or 52.0 MB (si, powers of 1000)."""
    if units == "raw":
        return f"{n:,}"
    for scale, suffix in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if n >= scale:
            return f"{_sig3(n / scale)} {suffix}"
    return f"{n} B"


def field(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


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


def totals_line(report: Report, units: str = "raw") -> str:
    batch = f", batch {report.batch}" if report.batch != 1 else ""
    train = (f" (+{count(report.train_only_macs, units)} in training-only layers)"
             if report.train_only_macs else "")
    return (
        f"params {count(report.total_params, units)}, buffers {count(report.total_buffers, units)}; "
        f"MACs {count(report.total_macs, units)} = {report.total_macs / 1e9:.3f} GMACs{train} in eval mode{batch}; "
        f"activation memory {size(report.activation_bytes, units)} (fp32); model size "
        f"{size(report.model_bytes(4), units)} fp32, {size(report.model_bytes(2), units)} fp16, "
        f"{size(report.model_bytes(1), units)} int8"
    )


def to_json(report: Report, depth: Optional[int] = None) -> str:
    data = report.to_dict()
    if depth is not None:
        data["nodes"] = [n for n in data["nodes"] if n["depth"] <= depth]
    return json.dumps(data, indent=2)


def to_csv(report: Report, depth: Optional[int] = None) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in visible(report, depth):
        writer.writerow([r.name, r.kind, r.op, fmt_shape(r.output_shape), r.params, r.buffers, r.macs,
                         r.activations, r.activations * report.BYTES_PER_ACTIVATION, field(r.rf), field(r.jump),
                         str(r.train_only).lower()])
    return out.getvalue()


def to_markdown(report: Report, depth: Optional[int] = None, units: str = "raw") -> str:
    lines = [
        f"**{report.title or report.name}** — input {fmt_shape(report.input)}",
        "",
        "| name | op | output | params | buffers | MACs | activation memory | RF / jump |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in visible(report, depth):
        name = "&nbsp;&nbsp;" * (r.depth - 1) + f"`{r.name}`" + (" (train only)" if r.train_only else "")
        lines.append(
            f"| {name} | {r.label} | {fmt_shape(r.output_shape)} | {count(r.params, units)} | "
            f"{count(r.buffers, units)} | {count(r.macs, units)} | "
            f"{size(r.activations * report.BYTES_PER_ACTIVATION, units)} | {field(r.rf)} / {field(r.jump)} |"
        )
    lines.append(
        f"| **total** | | | **{count(report.total_params, units)}** | **{count(report.total_buffers, units)}** | "
        f"**{count(report.total_macs, units)}** | **{size(report.activation_bytes, units)}** | |"
    )
    lines += ["", totals_line(report, units) + ".", "", outputs_line(report) + ".", "", f"_{conventions()}._", ""]
    return "\n".join(lines)


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


def to_table(report: Report, depth: Optional[int] = None, units: str = "raw"):  # -> rich.table.Table
    from rich.table import Table

    batch = f", batch {report.batch}" if report.batch != 1 else ""
    table = Table(title=f"{report.title or report.name}  (input {fmt_shape(report.input)}{batch})",
                  title_justify="left")
    for header, justify in (("name", "left"), ("op / block", "left"), ("output", "right"), ("params", "right"),
                            ("buffers", "right"), ("MACs", "right"), ("act. memory", "right"),
                            ("RF / jump", "right")):
        table.add_column(header, justify=justify, no_wrap=True)
    rows = visible(report, depth)
    for r, prefix in zip(rows, tree_prefixes(rows)):
        style = "bold" if r.kind == "block" else ("dim" if r.train_only else None)
        name = prefix + (r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name)
        table.add_row(name + (" *" if r.train_only and r.kind != "layer" else ""), r.label,
                      fmt_shape(r.output_shape), count(r.params, units), count(r.buffers, units),
                      count(r.macs, units), size(r.activations * report.BYTES_PER_ACTIVATION, units),
                      f"{field(r.rf)} / {field(r.jump)}", style=style)
    table.add_section()
    table.add_row("total", "", "", count(report.total_params, units), count(report.total_buffers, units),
                  count(report.total_macs, units), size(report.activation_bytes, units), "", style="bold")
    notes = ["* runs in training mode only"] if any(r.train_only for r in rows) else []
    table.caption = "\n".join([totals_line(report, units) + ".", outputs_line(report) + ".", *notes,
                               conventions() + "."])
    table.caption_justify = "left"
    return table
