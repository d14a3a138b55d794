"""report: every rendering carries the report's figures and its conventions.

JSON and CSV parse back to the same totals; the Markdown is a pipe table a
Markdown renderer accepts; the rich table is a tree with the totals, memory
and model sizes; `--units si` rounds, `raw` does not.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
from pathlib import Path

import pytest

import archcompiler
from archcompiler import report
from archcompiler.analysis import CONVENTIONS

SPEC = Path(__file__).parents[1] / "specs" / "googlenet.yaml"


@pytest.fixture(scope="module")
def rep():
    return archcompiler.summary(SPEC)


def test_json_round_trips_totals_and_rows(rep):
    data = json.loads(report.to_json(rep))
    assert data["total_params"] == rep.total_params and data["total_macs"] == rep.total_macs
    assert data["total_buffers"] == rep.total_buffers and data["activation_bytes"] == 4 * rep.total_activations
    assert data["model_bytes"] == {"fp32": 4 * (rep.total_params + rep.total_buffers),
                                   "fp16": 2 * (rep.total_params + rep.total_buffers),
                                   "int8": rep.total_params + rep.total_buffers}
    assert [n["name"] for n in data["nodes"]] == [r.name for r in rep.rows]
    assert data["nodes"][0]["receptive_field"] == [7, 7] and data["nodes"][0]["jump"] == [2, 2]
    assert data["conventions"] == CONVENTIONS and "BatchNorm, pooling, activations and adds count 0" in CONVENTIONS


@pytest.mark.parametrize("depth", [1, 2, None])
def test_every_depth_keeps_the_totals(rep, depth):
    rows = list(csv.DictReader(io.StringIO(report.to_csv(rep, depth))))
    top = [r for r in rows if "." not in r["name"]]
    assert sum(int(r["params"]) for r in top) == rep.total_params
    assert sum(int(r["buffers"]) for r in top) == rep.total_buffers
    assert sum(int(r["macs"]) for r in top if r["train_only"] == "false") == rep.total_macs
    assert sum(int(r["activation_bytes"]) for r in top if r["train_only"] == "false") == rep.activation_bytes
    assert all(r["name"].count(".") < depth for r in rows) if depth else len(rows) == len(rep.rows)


def test_csv_columns_and_receptive_fields(rep):
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(report.to_csv(rep)))}
    assert list(next(iter(rows.values()))) == list(report.COLUMNS)
    assert rows["inception5b"]["receptive_field"] == "379" and rows["inception5b"]["jump"] == "32"


def markdown_table(text: str) -> list[list[str]]:
    """The cells of the one pipe table in `text`, checked to be well formed."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    assert len({len(row) for row in cells}) == 1, "every row has the header's number of cells"
    assert all(set(c) <= set("-:") and "-" in c for c in cells[1]), "the second line is the separator"
    return cells


@pytest.mark.parametrize("units", report.UNITS)
def test_markdown_is_a_table_with_one_row_per_visible_row(rep, units):
    text = report.to_markdown(rep, 1, units)
    cells = markdown_table(text)
    assert cells[0] == ["name", "op", "output", "params", "buffers", "MACs", "activation memory", "RF / jump"]
    assert len(cells) == 2 + len(report.visible(rep, 1)) + 1  # header, rule, rows, total
    assert cells[-1][3] == (f"**{rep.total_params:,}**" if units == "raw" else "**13.0M**")
    assert CONVENTIONS in text


def test_markdown_renders_as_an_html_table(rep):
    from markdown_it import MarkdownIt  # rich's own Markdown parser

    html = MarkdownIt("commonmark").enable("table").render(report.to_markdown(rep, 1))
    assert html.count("<tr>") == 1 + len(report.visible(rep, 1)) + 1  # header, rows, total
    assert ">params</th>" in html and html.count("<table>") == 1


def test_table_is_a_tree_with_totals_memory_and_model_sizes(rep):
    from rich.console import Console

    console = Console(width=250, record=True, file=io.StringIO())
    console.print(report.to_table(rep, 2))
    text = console.export_text()
    assert "13,004,888" in text and "1,498,376,192" in text and "1.50 GMACs" in text
    assert f"model size {4 * (rep.total_params + rep.total_buffers):,} bytes" in text
    assert "├─ branch1" in text and "└─ concat" in text  # tree guides under inception3a
    for row in report.visible(rep, 2):
        assert row.name.rsplit(".", 1)[-1] in text
    assert "* runs in training mode only" in text


def test_si_units(rep):
    assert [report.count(n, "si") for n in (999, 1_000, 13_004_888, 1_498_376_192)] == ["999", "1.00K", "13.0M", "1.50G"]
    assert report.count(13_004_888, "raw") == "13,004,888"
    assert [report.size(n, "si") for n in (512, 52_019_552, 3_100_000_000)] == ["512 B", "52.0 MB", "3.10 GB"]
    from rich.console import Console

    console = Console(width=250, record=True, file=io.StringIO())
    console.print(report.to_table(rep, 1, "si"))
    text = console.export_text()
    assert "13.0M" in text and "13,004,888" not in text


def test_tree_prefixes_mark_last_children():
    rows = [archcompiler.analysis.Row(name, "layer", "relu", "relu", depth, (1,), 0, 0, 0, 1, False)
            for name, depth in [("a", 1), ("a.x", 2), ("a.x.p", 3), ("a.y", 2), ("b", 1)]]
    assert report.tree_prefixes(rows) == ["", "├─ ", "│  └─ ", "└─ ", ""]


# ------------------------------------------------------------------------------ fitting the terminal

def _zoo_names() -> list[str]:
    from archcompiler import zoo

    return list(zoo.models())


ZOO_SPECS = sorted((Path(__file__).parents[1] / "specs").glob("*.yaml"))


@functools.lru_cache(maxsize=None)
def _summary(spec: Path):
    """A spec file's report, compiled once for the width and the depth tests (rendering leaves it as it is)."""
    return archcompiler.summary(spec)


def _rendered(rep, width: int, **kw) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO())
    console.print(report.to_table(rep, width=width, **kw))
    return console.export_text()


def _cells(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and body cells of a rendered rich table, split at the header's column borders."""
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    edges = [i for i, ch in enumerate(header) if ch == "┃"]

    def split(line: str) -> list[str]:
        return [line[a + 1:b].strip() for a, b in zip(edges, edges[1:])]

    return split(header), [split(line) for line in lines if line.startswith("│")]


def _assert_nothing_cut(rep, text: str, width: int, depth=report.MODULES) -> None:
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    assert "…" not in text, "a cell was cut"
    _, body = _cells(text)
    rows = report.visible(rep, depth)
    assert len(body) == len(rows) + 1, "one line per row and the total: nothing folded"
    for row, cells in zip(rows, body):
        tail = row.name.rsplit(".", 1)[-1] if row.depth > 1 else row.name
        assert cells[0].removesuffix(" *").endswith(tail), (cells[0], row.name)
        assert fmt_shape(row.output_shape) in cells
        assert {report.count(row.params, "raw"), report.count(row.params, "si")} & set(cells)
        assert {report.count(row.macs, "raw"), report.count(row.macs, "si")} & set(cells)
    assert f"{rep.total_params:,} params" in " ".join(text.split())


from archcompiler.ops import fmt_shape  # noqa: E402


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("spec", ZOO_SPECS, ids=[p.stem for p in ZOO_SPECS])
def test_no_number_name_or_shape_is_cut_at_80_and_120_columns(spec, width):
    rep = _summary(spec)
    _assert_nothing_cut(rep, _rendered(rep, width), width)


HEAVY = os.environ.get("ARCHC_HEAVY", "") not in ("", "0")


@pytest.mark.skipif(not HEAVY, reason="every zoo model by name (~70 s); each spec file is checked above; "
                                      "ARCHC_HEAVY=1 runs it")
@pytest.mark.parametrize("width", [80, 120])
def test_every_zoo_model_by_name_fits(width):
    for name in _zoo_names():
        rep = archcompiler.summary(name)
        _assert_nothing_cut(rep, _rendered(rep, width), width)


def _assert_default_depth_shows_the_modules(rep) -> None:
    """The table at its default depth has a row for each module: every outermost block instance, every
    layer outside blocks and the groups holding them, and nothing inside a block instance."""
    blocks = [r.name for r in rep.rows if r.kind == "block"]

    def inside_a_block(name: str) -> bool:
        return any(name.startswith(b + ".") for b in blocks)

    expected = [r for r in rep.rows if not inside_a_block(r.name)]
    outermost = [b for b in blocks if not inside_a_block(b)]
    assert len(outermost) == sum(r.kind == "block" for r in expected)
    _, body = _cells(_rendered(rep, 300))
    shown = [cells[0].lstrip("│├└─ ").removesuffix(" *") for cells in body[:-1]]  # the last line is the total
    assert shown == [r.name.rsplit(".", 1)[-1] if r.depth > 1 else r.name for r in expected]
    if any(r.kind == "group" and any(b.startswith(r.name + ".") for b in outermost) for r in expected):
        # a group of blocks (timm's `features`) is opened: more than --depth 1 shows, which was the group alone
        assert len(shown) > sum(r.depth == 1 for r in rep.rows)


@pytest.mark.parametrize("spec", ZOO_SPECS, ids=[p.stem for p in ZOO_SPECS])
def test_default_depth_shows_the_modules_of_every_zoo_spec(spec):
    rep = _summary(spec)
    _assert_default_depth_shows_the_modules(rep)
    if spec.stem in ("inception_v4", "inception_resnet_v2"):  # the timm layouts: blocks in `features`, `repeat`
        assert sum(r.kind == "block" and r.depth > 1 for r in report.visible(rep, report.MODULES)) > 10


@pytest.mark.skipif(not HEAVY, reason="every zoo model by name; each spec file is checked above; ARCHC_HEAVY=1 runs it")
def test_default_depth_shows_the_modules_of_every_zoo_model():
    for name in _zoo_names():
        _assert_default_depth_shows_the_modules(archcompiler.summary(name))


def test_columns_drop_by_the_stated_priority(rep):
    wide = _rendered(rep, 200)
    assert "buffers" in wide and "RF / jump" in wide and "13,004,888" in wide
    narrow = _rendered(rep, 80)
    header = next(line for line in narrow.splitlines() if "name" in line and "output" in line)
    assert "buffers" not in header and "RF / jump" not in header and "MACs" in header and "params" in header
    assert "to fit 80 columns: 'buffers' left out, 'RF / jump' left out" in " ".join(narrow.split())
    assert [step for step in report.FIT_STEPS] == [("drop", "buffers"), ("drop", "rf"), ("si", None),
                                                   ("drop", "act"), ("drop", "op")]


def test_columns_take_torchinfos_ids(rep):
    cols = report.parse_columns("output_size,num_params,params_percent,mult_adds,kernel_size")
    assert cols == ("name", "output", "params", "params_percent", "macs", "kernel")
    text = _rendered(rep, 120, depth=None, columns=cols)
    assert _cells(text)[0] == ["name", "output", "params", "params %", "MACs", "kernel"]
    assert "7x7" in text and "100%" in text
    with pytest.raises(archcompiler.errors.UserError, match="no column 'colour'"):
        report.parse_columns("params,colour")


def test_si_prefixes_suit_the_size():
    assert report.si(2_100_000, "MACs") == "2.10 MMACs" and report.si(840, "MACs") == "840 MACs"
    assert report.si(1_814_073_344, "FLOPs") == "1.81 GFLOPs" and report.si(52_019_552, "B") == "52.0 MB"
    lenet = archcompiler.summary("lenet5")
    line = report.totals_line(lenet)
    assert "GMACs" not in line and " kMACs" in line or " MMACs" in line


def test_every_total_names_its_unit(rep):
    raw, si = report.totals_line(rep), report.totals_line(rep, "si")
    assert raw.startswith("total: 13,004,888 params, ") and "buffer values" in raw
    assert "1,498,376,192 MACs (1.50 GMACs)" in raw and " bytes (" in raw
    assert si.startswith("total: 13.0M params") and "1.50 GMACs" in si and " MB fp32" in si


def test_flops_are_twice_the_macs_and_labelled_flops(rep):
    line = report.totals_line(rep, count_as="flops")
    assert "2,996,752,384 FLOPs (3.00 GFLOPs) (FLOPs = 2 x MACs)" in line and "MACs (" not in line
    text = _rendered(rep, 200, count_as="flops")
    header = next(line for line in text.splitlines() if "name" in line and "output" in line)
    assert "FLOPs" in header and "MACs" not in header and "2,996,752,384" in text
    data = json.loads(report.to_json(rep, count_as="flops"))
    assert data["total_flops"] == 2 * data["total_macs"] and data["count"] == "flops"
    assert all(n["flops"] == 2 * n["macs"] for n in data["nodes"])
    rows = list(csv.DictReader(io.StringIO(report.to_csv(rep, count_as="flops"))))
    assert all(int(r["flops"]) == 2 * int(r["macs"]) for r in rows)
    md = report.to_markdown(rep, 1, count_as="flops")
    assert "| FLOPs |" in md and "| MACs |" not in md


# ------------------------------------------------------------------------------ LaTeX


def check_latex(text: str) -> list[list[str]]:
    """Check a booktabs table's structure (without a TeX engine: CI has none); return its rows' cells."""
    import re

    assert text.isascii(), "every character escaped or spelled in LaTeX"
    lines = text.strip().splitlines()
    assert lines[0] == r"\begin{table}[htbp]" and lines[-1] == r"\end{table}"
    assert text.count(r"\begin{tabular}") == text.count(r"\end{tabular}") == 1
    rules = [line for line in lines if line in (r"\toprule", r"\midrule", r"\bottomrule")]
    assert rules[0] == r"\toprule" and rules[-1] == r"\bottomrule" and r"\midrule" in rules
    align = re.search(r"\\begin\{tabular\}\{([lcr]+)\}", text).group(1)
    body = [line for line in lines if line.endswith(r"\\")]
    cells = [re.split(r"(?<!\\)&", line[:-2]) for line in body]
    assert all(len(c) == len(align) for c in cells), "every row has the tabular's columns"
    for line in body:
        bare = re.sub(r"\\[a-zA-Z]+\{?|\\[_&%$#{}]|\{|\}|\$[^$]*\$", "", line)
        assert not re.search(r"[_%#^~]", bare), line  # specials are escaped
    depth = 0
    for ch in re.sub(r"\\[{}]", "", text):
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0, "braces balance"
    return [[c.strip() for c in row] for row in cells]


@pytest.mark.parametrize("count_as", report.COUNTS)
def test_latex_summary_is_a_booktabs_table(rep, count_as):
    text = report.to_latex(rep, report.MODULES, "raw", count_as)
    cells = check_latex(text)
    assert cells[0][5] == ("FLOPs" if count_as == "flops" else "MACs")
    assert len(cells) == 1 + len(report.visible(rep, report.MODULES)) + 1  # header, rows, total
    assert cells[-1][3] == r"\textbf{13,004,888}"
    assert r"\texttt{inception3a}" in text and r"\quad \texttt{" not in text  # modules: no nesting shown
    nested = report.to_latex(rep, 2)
    assert r"\quad \texttt{branch1}" in nested
    check_latex(nested)


def _pdflatex(table: str, where: Path) -> str:
    """Compile `table` in a minimal article with booktabs; return the log (the run must stop on no error)."""
    import subprocess

    tex = where / "table.tex"
    tex.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n" + table
                   + "\\end{document}\n", encoding="ascii")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", tex.name],
                         cwd=where, capture_output=True, text=True, timeout=120)
    log = (where / "table.log").read_text(errors="replace")
    assert run.returncode == 0 and (where / "table.pdf").stat().st_size > 0, log[-2000:]
    return log


@pytest.mark.skipif(__import__("shutil").which("pdflatex") is None, reason="no TeX engine (pdflatex) on PATH")
def test_latex_of_summary_paper_and_diff_compiles_with_pdflatex(rep, tmp_path):
    """One table of each kind through pdflatex: every command it meets is defined, every character printable."""
    from archcompiler import diff as diffing
    from archcompiler import paper
    from archcompiler.analysis import analyze

    paper_graph = archcompiler.compile_graph(SPEC.with_name("googlenet_paper.yaml"))
    tables = {
        "summary": report.to_latex(rep, 2, "si", "flops"),
        "paper": paper.to_latex(paper.paper_table(paper_graph, analyze(paper_graph)), "si"),
        "diff": diffing.to_latex(diffing.diff(archcompiler.compile_graph(SPEC),
                                              archcompiler.compile_graph(SPEC.with_name("inception_v3.yaml")),
                                              train_only=True)),
    }
    for kind, table in tables.items():
        (tmp_path / kind).mkdir()
        log = _pdflatex(table, tmp_path / kind)
        assert "Missing character" not in log and "Undefined control sequence" not in log, kind
        assert "Output written on table.pdf (1 page" in " ".join(log.split()), kind


# ------------------------------------------------------------------------------ the docs' examples

ROOT = Path(__file__).parents[1]


def doc_commands(doc: str, command: str) -> list[list[str]]:
    """The `archc COMMAND ...` lines of a page's ```bash blocks, as arguments (comments and `.venv/bin/` cut)."""
    import re
    import shlex

    text = (ROOT / doc).read_text(encoding="utf-8")
    lines = [line.split("  #", 1)[0].strip() for _, body in re.findall(r"^```(bash)\n(.*?)^```$", text, re.S | re.M)
             for line in body.splitlines()]
    return [shlex.split(line)[1:] for line in (line.removeprefix(".venv/bin/") for line in lines)
            if line.startswith(f"archc {command} ")]


@pytest.mark.parametrize("doc", ["README.md", "docs/summaries.md"])
def test_the_docs_summary_examples_run(doc):
    from conftest import run_archc

    examples = doc_commands(doc, "summary")
    assert len(examples) >= 3
    for args in examples:
        r = run_archc(*args, cwd=ROOT, env={"COLUMNS": "120"})
        assert r.returncode == 0 and r.stdout, (args, r.stderr)
        if args == ["summary", "specs/inception_v4.yaml"]:  # the README: "its modules, features.0 ... features.21"
            _, body = _cells(r.stdout)
            names = [cells[0].lstrip("│├└─ ") for cells in body]
            assert {f"{i}" for i in range(22)} <= set(names) and "features" in names
    assert doc != "README.md" or ["summary", "specs/inception_v4.yaml"] in examples


def test_the_docs_totals_line_is_resnet18s():
    import re

    text = (ROOT / "docs" / "summaries.md").read_text(encoding="utf-8")
    shown = re.search(r"```text\n(total: .*?)```", text, re.S).group(1)
    rep = archcompiler.summary("resnet18")
    assert " ".join(shown.split()) == report.totals_line(rep) + "."
