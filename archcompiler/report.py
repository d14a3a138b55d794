"""`Report` -> text: a rich table, JSON, CSV or Markdown.

In: a `Report` from `analysis.analyze` and a depth (rows nested deeper are
folded into their block's row, whose figures already include them).  Out: a
string (or, for the table, a rich renderable).  No torch.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Optional

from .analysis import CONVENTIONS, Report, Row
from .ops import fmt_shape

FORMATS = ("table", "json", "csv", "markdown")
COLUMNS = ("name", "kind", "op", "output_shape", "params", "buffers", "macs", "activations", "train_only")


def visible(report: Report, depth: Optional[int]) -> list[Row]:
    return [r for r in report.rows if depth is None or r.depth <= depth]


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
                         r.activations, str(r.train_only).lower()])
    return out.getvalue()


def to_markdown(report: Report, depth: Optional[int] = None) -> str:
    lines = [
        f"**{report.title or report.name}** — input {fmt_shape(report.input)}",
        "",
        "| name | op | output | params | MACs |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for r in visible(report, depth):
        name = "&nbsp;&nbsp;" * (r.depth - 1) + f"`{r.name}`" + (" (train only)" if r.train_only else "")
        lines.append(f"| {name} | {r.label} | {fmt_shape(r.output_shape)} | {r.params:,} | {r.macs:,} |")
    lines.append(f"| **total** | | | **{report.total_params:,}** | **{report.total_macs:,}** |")
    lines += ["", f"_{CONVENTIONS}_", ""]
    return "\n".join(lines)


def to_table(report: Report, depth: Optional[int] = None):  # -> rich.table.Table
    from rich.table import Table

    table = Table(title=f"{report.title or report.name}  (input {fmt_shape(report.input)})", title_justify="left")
    for header, justify in (("name", "left"), ("op", "left"), ("output", "right"), ("params", "right"),
                            ("buffers", "right"), ("MACs", "right"), ("activations", "right")):
        table.add_column(header, justify=justify, no_wrap=True)
    for r in visible(report, depth):
        style = "bold" if r.kind == "block" else ("dim" if r.train_only else None)
        name = "  " * (r.depth - 1) + r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name
        table.add_row(name + (" *" if r.train_only and r.kind != "layer" else ""), r.label,
                      fmt_shape(r.output_shape), f"{r.params:,}", f"{r.buffers:,}", f"{r.macs:,}",
                      f"{r.activations:,}", style=style)
    table.add_section()
    table.add_row("total", "", "", f"{report.total_params:,}", f"{report.total_buffers:,}",
                  f"{report.total_macs:,}", f"{report.total_activations:,}", style="bold")
    table.caption = (
        f"{report.total_params / 1e6:.2f}M params, {report.total_macs / 1e9:.3f} GMACs in eval mode"
        + (f" (+{report.train_only_macs / 1e6:.1f}M MACs in train-only layers)" if report.train_only_macs else "")
        + f". {CONVENTIONS}."
    )
    table.caption_justify = "left"
    return table
