"""Hostile input never crashes archc: files that are not files, odd line breaks, tags on the
wrong text, huge integers, deep nesting, unquoted expressions, huge values in messages.

Each case gets a located one-line error (exit 2 from the CLI), never a hang, a traceback,
a RecursionError or a segfault.  Spec-file cases also have fixtures in tests/fixtures/bad_specs/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from archcompiler import source
from archcompiler.cli import parse_overrides
from archcompiler.errors import MAX_SHOWN, Loc, SpecError, UserError, shorten, shown
from archcompiler.source import MAX_DEPTH, MAX_INT_DIGITS, MAX_SPEC_BYTES, load_text, parse_yaml, position
from archcompiler.spec import parse_spec

from conftest import Ran, run_archc

ROOT = Path(__file__).parents[1]
HEAD = "archc: 1\nname: net\ninput: [3, 32, 32]\n"


def archc(*args: str, timeout: float = 60) -> Ran:
    """The command line, in this process (conftest.run_archc); interrupted past `timeout` seconds."""
    return run_archc(*args, cwd=ROOT, timeout=timeout)


def archc_process(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The command line in a process of its own: what could overflow the C stack or eat memory."""
    return subprocess.run([sys.executable, "-m", "archcompiler.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, errors="replace", timeout=timeout)


def one_error_line(r: Ran | subprocess.CompletedProcess) -> str:
    assert "Traceback" not in r.stdout + r.stderr, r.stderr[-2000:]
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert r.stdout == "" and r.stderr.endswith("\n") and r.stderr.count("\n") == 1, r.stderr[-2000:]
    return r.stderr.rstrip("\n")


def error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "t.yaml")
    return info.value


@pytest.fixture(params=["libyaml", "python"])
def composer(request, monkeypatch):
    """Run a test under both composers: the libyaml fast path and the Python one."""
    if request.param == "python":
        monkeypatch.setattr(source, "_FastLoader", None)
    elif source._FastLoader is None:
        pytest.skip("PyYAML is built without libyaml")
    return request.param


# -- 1. only regular files of a bounded size are read ---------------------------------------


def test_dev_zero_is_refused_not_read():
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    line = one_error_line(archc_process("check", "/dev/zero", timeout=30))  # a regression reads, in its own process
    assert line == "/dev/zero:1:1: error: '/dev/zero' is a character device, not a spec file (hint: name a YAML file)"


def test_a_fifo_without_a_writer_is_refused_not_waited_on(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    fifo = tmp_path / "spec.yaml"
    os.mkfifo(fifo)
    line = one_error_line(archc("check", str(fifo), timeout=30))  # a regression times out instead of hanging
    assert line.startswith(f"{fifo}:1:1: error: '{fifo}' is a FIFO (named pipe), not a spec file")
    with pytest.raises(SpecError, match="is a FIFO"):
        load_text(fifo)


def test_a_directory_is_refused(tmp_path):
    line = one_error_line(archc("check", str(tmp_path)))
    assert line.startswith(f"{tmp_path}:1:1: error: '{tmp_path}' is a directory, not a spec file")


def test_a_file_past_the_size_bound_is_refused_unread(tmp_path):
    big = tmp_path / "big.yaml"
    with open(big, "wb") as f:
        f.truncate(MAX_SPEC_BYTES + 1)  # sparse: no 16 MiB written
    with pytest.raises(SpecError) as info:
        load_text(big)
    err = info.value
    assert (err.line, err.column) == (1, 1)
    assert f"is too large: {MAX_SPEC_BYTES + 1:,} bytes, limit 16 MiB" in str(err)
    assert MAX_SPEC_BYTES == 16 * 2**20


def test_a_symlink_to_a_spec_is_read(tmp_path):
    (tmp_path / "real.yaml").write_text("a: 1\n")
    (tmp_path / "link.yaml").symlink_to(tmp_path / "real.yaml")
    assert load_text(tmp_path / "link.yaml")[1] == "a: 1\n"


# -- 2. lines are counted as YAML counts them -----------------------------------------------

BREAKS = ["\n", "\r\n", "\r", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("brk", BREAKS, ids=[repr(b) for b in BREAKS])
def test_position_agrees_with_yamls_reader_at_every_offset(brk):
    text = f"a: 1{brk}b: [x,{brk} y]{brk}{brk}c: d\r\n\re: Größe{brk}"
    reader = yaml.reader.Reader(text)
    for offset in range(len(text) + 1):
        mark = reader.get_mark()
        assert position(text, offset) == (mark.line + 1, mark.column + 1), (offset, text[:offset])
        if offset < len(text):
            reader.forward()


def test_line_starts():
    assert source.line_starts("a\rb\r\nc\x85d\u2028") == [0, 2, 5, 7, 9]
    assert source.line_starts("") == [0]


@pytest.mark.parametrize("brk", ["\r", "\x85", "\u2028", "\u2029"], ids=repr)
def test_a_control_character_after_a_yaml_only_line_break(brk):
    err = error(f"a: 1{brk}b: 2{brk}c: x\x07\n")
    assert (err.line, err.column) == (3, 5), str(err)


@pytest.mark.parametrize("brk", ["\r", "\x85", "\u2028"], ids=repr)
def test_a_non_utf8_byte_after_a_yaml_only_line_break(tmp_path, brk):
    path = tmp_path / "s.yaml"
    path.write_bytes(f"a: 1{brk}title: Café ".encode() + b"\xe9\n")
    with pytest.raises(SpecError) as info:
        load_text(path)
    assert (info.value.line, info.value.column) == (2, 13)


@pytest.mark.parametrize("brk", ["\r", "\x85", "\u2028"], ids=repr)
def test_node_locations_after_yaml_only_line_breaks(brk, composer):
    tree = parse_yaml(f"a: 1{brk}b:{brk}  c: [1, 2]{brk}", "t.yaml")
    assert tree["b"].key_loc("c") == Loc("t.yaml", 3, 3) and tree["b"]["c"].loc_of(1) == Loc("t.yaml", 3, 10)


# -- 3. explicit tags on text that does not fit them ----------------------------------------


@pytest.mark.parametrize("text, tag", [("!!int 1.5", "!!int"), ("!!float abc", "!!float"), ("!!bool maybe", "!!bool"),
                                       ("!!null x", "!!null"), ('!!int ""', "!!int"), ("!!float ''", "!!float"),
                                       ("!!int 0x", "!!int"), ("!!int -", "!!int")])
def test_a_core_tag_on_text_that_does_not_fit_is_a_located_error(text, tag, composer):
    err = error(f"a: 1\nb: [1, {text}]\n")
    assert (err.line, err.column) == (2, 8)
    value = text.split(" ", 1)[1].strip("'\"")
    assert f"YAML tag '{tag}' does not fit the text {value!r}" in str(err)


@pytest.mark.parametrize("text, value", [("!!float 1", 1.0), ("!!null ~", None), ("!!null ''", None), ("!!bool yes", True),
                                         ("!!int 0x1F", 31), ("!!int '12'", 12), ("!!float 1.0e+999", float("inf"))])
def test_a_core_tag_on_text_that_fits_is_fine(text, value):
    assert parse_yaml(f"a: {text}\n", "t.yaml")["a"] == value


# -- 4. integer literals are bounded --------------------------------------------------------


@pytest.mark.parametrize("digits", [MAX_INT_DIGITS + 1, 5000, 100_000])
def test_a_long_integer_literal_is_refused(digits, composer):
    err = error("a: 1\nb: {c: " + "7" * digits + "}\n")
    assert (err.line, err.column) == (2, 8)
    assert f"integer literal too long: {digits:,} digits, limit {MAX_INT_DIGITS}" in str(err)


def test_an_integer_literal_at_the_bound_is_fine():
    assert parse_yaml("a: " + "9" * MAX_INT_DIGITS + "\n", "t.yaml")["a"] == 10**MAX_INT_DIGITS - 1
    assert parse_yaml("a: -1_000\n", "t.yaml")["a"] == -1000


@pytest.mark.parametrize("value, message", [
    ("7" * 5000, "integer literal too long: 5,000 digits"),
    ("!!int 1.5", "YAML tag '!!int' does not fit the text '1.5'"),
    ("!!bool maybe", "YAML tag '!!bool' does not fit the text 'maybe'"),
    ("[" * 100_000, f"nests deeper than {MAX_DEPTH} levels"),
    ("{a: " * 10_000 + "1" + "}" * 10_000, f"nests deeper than {MAX_DEPTH} levels"),
    ("!!python/object:os.system x", "is not allowed"),
    ("[1, 2]", "the value must be a single number"),
])
def test_a_bad_set_value_is_a_one_line_user_error(value, message):
    with pytest.raises(UserError) as info:
        parse_overrides([f"num_classes={value}"])
    text = str(info.value)
    assert text.startswith("error: --set num_classes: ") and message in text, text
    assert "\n" not in text and len(text) < 400


def test_set_values_that_are_fine():
    got = parse_overrides(["a=10", "b=false", "c=1.0e+999", "d=1e999", "e=a: b: c", "f=", "g=relu", "h=2015-06-07", "i=~"])
    assert got == {"a": 10, "b": False, "c": float("inf"), "d": "1e999", "e": "a: b: c", "f": "", "g": "relu",
                   "h": "2015-06-07", "i": None}


def test_a_huge_set_key_is_shortened():
    with pytest.raises(UserError) as info:
        parse_overrides(["k" * 100_000 + "=!!int x"])
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("value", ["7" * 5000, "1.0e+999", "1e999", "[" * 100_000])
def test_set_through_the_cli_never_crashes(value):
    line = one_error_line(archc("check", "specs/googlenet.yaml", "--set", f"num_classes={value}"))
    assert "num_classes" in line and len(line) < 400


# -- 5. nesting is bounded ------------------------------------------------------------------


def _deep(style: str, n: int) -> tuple[str, tuple[int, int]]:
    """`n` levels of nesting under `a:`, and where the first node past MAX_DEPTH stands.

    The root mapping is level 1, each nested collection one more, and so are keys and scalars.
    """
    past = MAX_DEPTH + 1
    if style == "flow sequence":  # `a: [[[...` : the k-th `[` is level k + 1, at column 4 + k - 1
        return "a: " + "[" * n + "]" * n + "\n", (1, 4 + past - 2)
    if style == "flow mapping":  # `a: {a: {a: ...`: the k-th `{` is level k + 1, its key level k + 2
        return "a: " + "{a: " * n + "1" + "}" * n + "\n", (1, 5 + 4 * (past - 3))
    if style == "block sequence":  # `- - - ...` on line 2, each entry two columns on
        return "a:\n  " + "- " * n + "x\n", (2, 3 + 2 * (past - 2))
    # block mapping: line L >= 2 holds the mapping at level L (indented L - 1), whose key is level L + 1
    text = "a:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(n)) + " " * (n + 1) + "1\n"
    return text, (past - 1, past - 1)


@pytest.mark.parametrize("n", [1000, 10_000, 100_000])
@pytest.mark.parametrize("style", ["flow sequence", "flow mapping", "block sequence", "block mapping"])
def test_deep_nesting_is_a_located_error(style, n, composer):
    if style == "block mapping" and n > 1000:
        pytest.skip("n levels of indentation take n**2 / 2 bytes, past MAX_SPEC_BYTES")
    text, where = _deep(style, n)
    err = error(text)
    assert (err.line, err.column) == where, str(err)
    assert f"the spec nests deeper than {MAX_DEPTH} levels" in str(err)


@pytest.mark.parametrize("style", ["flow sequence", "flow mapping", "block sequence", "block mapping"])
def test_nesting_up_to_the_bound_is_fine(style, composer):
    n = {"flow sequence": MAX_DEPTH - 1, "flow mapping": MAX_DEPTH - 2, "block sequence": MAX_DEPTH - 2,
         "block mapping": MAX_DEPTH - 2}[style]
    tree = parse_yaml(_deep(style, n)[0], "t.yaml")
    assert tree["a"] is not None
    with pytest.raises(SpecError, match="nests deeper"):
        parse_yaml(_deep(style, n + 1)[0], "t.yaml")


def test_aliases_cannot_stack_subtrees_past_the_bound():
    inner = "[" * 60 + "1" + "]" * 60
    err = error(f"a: &x {inner}\nb: {'[' * 60}*x{']' * 60}\n")
    assert (err.line, err.column) == (2, 64) and "nests deeper" in str(err)  # at the alias


def test_a_100000_deep_spec_gives_the_located_error_in_the_cli(tmp_path):
    """In a process of its own: a regression could overflow the C stack, not just raise."""
    for name, text in [("flow.yaml", "body: " + "[" * 100_000 + "]" * 100_000 + "\n"),
                       ("block.yaml", "body:\n  " + "- " * 100_000 + "relu\n")]:
        (tmp_path / name).write_text(HEAD + text)
        line = one_error_line(archc_process("check", str(tmp_path / name), timeout=60))
        assert f"error: the spec nests deeper than {MAX_DEPTH} levels" in line


# -- 6. an unquoted ${...} gets a hint ------------------------------------------------------


def test_an_unquoted_expression_in_a_flow_mapping_gets_the_quoting_hint():
    err = error("a: 1\nb: {conv: {out: ${c * 2}, k: 3}}\n")
    assert (err.line, err.column) == (2, 18)
    assert 'quote expressions: out: "${c * 2}"' in str(err)


def test_a_quoted_expression_gets_no_quoting_hint():
    err = error("a: 1\nb: {conv: {out: '${c * 2}', k: 3}]\n")
    assert "invalid YAML" in str(err) and err.hint is None


# -- 7. messages echo values shortened ------------------------------------------------------


def test_shown_and_shorten():
    assert shown("abc") == "'abc'" and shown(12) == "12"
    long = shown("x" * 10_000)
    assert len(long) == MAX_SHOWN and long.endswith("\u2026") and long.startswith("'xxx")
    assert shorten("y" * MAX_SHOWN) == "y" * MAX_SHOWN and len(shorten("y" * (MAX_SHOWN + 1))) == MAX_SHOWN


def test_a_spec_error_line_is_bounded_whatever_it_echoes():
    assert len(str(SpecError("x" * 10**6, Loc("t.yaml", 1, 1)))) <= 1000


@pytest.mark.parametrize("text", [
    HEAD.replace("name: net", "name: n" + "x" * 10**6 + "-") + "body: [relu]\n",  # an invalid name
    HEAD + "k" * 1000 + ": 1\nbody: [relu]\n",  # an unknown top-level key (YAML keys stop at 1024 characters)
    HEAD + "params: {" + "p" * 1000 + "-: 1}\nbody: [relu]\n",  # an invalid parameter name
    HEAD + "body: [relu]\nx: !" + "t" * 10**6 + " 1\n",  # an unknown tag
    HEAD + "body: [relu]\nx: 1\n" + "y" * 1000 + ": 1\n" + "y" * 1000 + ": 2\n",  # a duplicate key
])
def test_a_huge_value_is_echoed_shortened(text):
    with pytest.raises(SpecError) as info:
        parse_spec(text, "t.yaml")
    assert len(str(info.value)) < 400, str(info.value)[:500]
    assert "\u2026" in str(info.value)


def test_the_libyaml_fast_path_is_taken_only_where_libyaml_bounds_nesting():
    """libyaml's composer recurses in C: without its own limit a deep `[[[...` would overflow the stack."""
    if source._FastLoader is None:
        pytest.skip("no libyaml fast path here")
    with pytest.raises(yaml.YAMLError, match="maximum nesting depth"):
        yaml.compose("[" * 2000 + "]" * 2000, Loader=source._FastLoader)


def test_a_user_error_line_is_bounded_too():
    assert len(str(UserError("--depth takes a whole number, got " + "9" * 10**6))) <= 1000
