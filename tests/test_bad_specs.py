"""Every broken spec in tests/fixtures/bad_specs/ fails cleanly, pointing at the offending text.

Each fixture carries its expectation on its first line:

    # expect: LINE:COL MESSAGE-SUBSTRING

LINE:COL (1-based) is where the error must point, the substring must occur in
the message.  Files that cannot carry the comment (the empty file) have their
expectation in `NO_COMMENT` below.  For each fixture, `archc check` must exit 2
and print exactly one line `PATH:LINE:COL: error: MESSAGE` on stderr, with no
traceback; `compile_graph` must raise a `SpecError` with the same place.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

import archcompiler
from archcompiler import SpecError, source

from conftest import Ran, run_archc

ROOT = Path(__file__).parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "bad_specs"
FILES = sorted(p for p in FIXTURES.iterdir() if p.is_file())
NO_COMMENT = {"empty.yaml": (1, 1, "the spec is empty")}
EXPECT = re.compile(r"# expect: (\d+):(\d+) (.+)")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def lines(path: Path) -> list[str]:
    """The file's lines, broken as YAML (and so archc) breaks them: CR LF, CR, LF, NEL, U+2028, U+2029."""
    return source.LINE_BREAK.split(path.read_bytes().decode("utf-8", errors="replace"))


def expectation(path: Path) -> tuple[int, int, str]:
    if path.name in NO_COMMENT:
        return NO_COMMENT[path.name]
    m = EXPECT.fullmatch(lines(path)[0])
    assert m, f"{path.name}: the first line must be '# expect: LINE:COL MESSAGE'"
    return int(m[1]), int(m[2]), m[3]


def archc(*args: str) -> Ran:
    """The command line, in this process (conftest.run_archc); tests/test_cli.py runs the real `archc` once."""
    return run_archc(*args, cwd=ROOT, timeout=60)


def test_there_are_enough_bad_specs():
    assert len(FILES) >= 25
    assert all(p.suffix == ".yaml" for p in FILES)
    assert set(NO_COMMENT) <= {p.name for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_expectation_points_into_the_file(path):
    line, col, message = expectation(path)
    text = lines(path)
    assert message.strip()
    assert 1 <= line <= max(len(text), 1), f"line {line} is past the end of {path.name}"
    assert 1 <= col <= len(text[line - 1]) + 1, f"column {col} is past the end of line {line}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_check_reports_one_located_error(path):
    line, col, message = expectation(path)
    r = archc("check", rel(path))
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    assert r.returncode == 2, f"exit {r.returncode}; stdout: {r.stdout!r}; stderr: {r.stderr!r}"
    assert r.stdout == ""
    assert r.stderr.endswith("\n") and r.stderr.count("\n") == 1, f"not exactly one line: {r.stderr!r}"
    got = r.stderr.rstrip("\n")
    head = re.match(r"(.*):(\d+):(\d+): error: ", got)
    assert head, got
    assert head[1] == rel(path)
    assert (int(head[2]), int(head[3])) == (line, col), got
    assert message in got[head.end():], got


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_compile_graph_raises_located_spec_error(path):
    line, col, message = expectation(path)
    with pytest.raises(SpecError) as info:
        archcompiler.compile_graph(str(path))
    err = info.value
    assert (err.path, err.line, err.column) == (str(path), line, col), str(err)
    assert message in str(err)
    assert str(err).startswith(f"{path}:{line}:{col}: error: ")
    assert "\n" not in str(err)


@pytest.mark.parametrize("name", ["misspelt_op.yaml", "concat_spatial_mismatch.yaml"])
def test_build_of_a_bad_spec_writes_nothing(tmp_path, name):
    out = tmp_path / "out"
    r = archc("build", rel(FIXTURES / name), "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith(f"{rel(FIXTURES / name)}:")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no staging directory left behind either


def test_build_of_a_bad_spec_leaves_an_existing_output_alone(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    r = archc("build", rel(FIXTURES / "linear_without_flatten.yaml"), "-o", str(out))
    assert r.returncode == 2, r.stderr
    assert [p.name for p in out.iterdir()] == ["summary.json"]
    assert (out / "summary.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_alias_bomb_is_small_but_expands_past_the_budget():
    path = FIXTURES / "alias_bomb.yaml"
    assert path.stat().st_size < 1024
    node = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:  # values after expanding every alias
        if id(n) not in sizes:
            if isinstance(n, yaml.ScalarNode):
                sizes[id(n)] = 1
            elif isinstance(n, yaml.SequenceNode):
                sizes[id(n)] = 1 + sum(size(c) for c in n.value)
            else:
                sizes[id(n)] = 1 + sum(size(v) for _, v in n.value)
        return sizes[id(n)]

    assert size(node) > 1000 * source.MAX_VALUES


def test_non_utf8_fixtures_are_not_utf8():
    for name in ("not_utf8.yaml", "not_utf8_after_multibyte.yaml"):
        with pytest.raises(UnicodeDecodeError):
            (FIXTURES / name).read_bytes().decode("utf-8")
    assert (FIXTURES / "empty.yaml").read_bytes() == b""
