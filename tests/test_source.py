"""The YAML loader: located plain values, and the safety rules (tags, merge keys, duplicates, aliases)."""

from __future__ import annotations

import textwrap

import pytest

from archcompiler import source
from archcompiler.errors import Loc, SpecError
from archcompiler.source import Mapping, Sequence, load_text, locate, parse_yaml


def parse(text: str) -> Mapping:
    return parse_yaml(textwrap.dedent(text).lstrip("\n"), "t.yaml")


def error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(text)
    return info.value


def at(err: SpecError) -> tuple[int | None, int | None]:
    return err.line, err.column


# -- locations ---------------------------------------------------------------


def test_keys_values_and_items_know_their_line_and_column():
    tree = parse("""
        archc: 1
        body:
          conv1: {conv: {out: 16, k: 3}}
          seq:
            - relu
            -   flatten
    """)
    assert isinstance(tree, Mapping) and tree.loc == Loc("t.yaml", 1, 1)
    assert tree.key_loc("archc") == Loc("t.yaml", 1, 1)
    assert tree.loc_of("archc") == Loc("t.yaml", 1, 8)
    body = tree["body"]
    assert tree.loc_of("body") == Loc("t.yaml", 3, 3)  # a block mapping starts at its first key
    assert body.key_loc("conv1") == Loc("t.yaml", 3, 3)
    assert body.loc_of("conv1") == Loc("t.yaml", 3, 10)
    conv = body["conv1"]["conv"]
    assert conv.key_loc("k") == Loc("t.yaml", 3, 27) and conv.loc_of("k") == Loc("t.yaml", 3, 30)
    items = body["seq"]
    assert isinstance(items, Sequence) and items == ["relu", "flatten"]
    assert items.loc_of(0) == Loc("t.yaml", 5, 7)
    assert items.loc_of(1) == Loc("t.yaml", 6, 9)


def test_unknown_keys_and_indices_fall_back_to_the_container():
    tree = parse("a: [1, 2]\n")
    assert tree.loc_of("missing") == tree.loc and tree.key_loc("missing") == tree.loc
    assert tree["a"].loc_of(5) == tree["a"].loc and tree["a"].loc_of(-1) == tree["a"].loc
    assert source.loc_of(42, "x", Loc("f", 9, 9)) == Loc("f", 9, 9)


def test_locate_follows_a_path_and_stops_where_it_breaks():
    tree = parse("""
        body:
          conv1: {conv: {out: 16, k: [3, 5]}}
    """)
    fallback = Loc("t.yaml", 99, 99)
    assert locate(tree, ("body", "conv1", "conv", "k", 1), fallback) == Loc("t.yaml", 2, 34)
    assert locate(tree, ("body", "conv1", "conv", "nope", 0), fallback) == Loc("t.yaml", 2, 17)
    assert locate(tree, (), fallback) == tree.loc
    assert locate("not a tree", ("a",), fallback) == fallback


def test_plain_scalars_keep_their_core_schema_types():
    tree = parse("""
        i: 3
        f: 0.5
        b: true
        n: null
        s: hello
        q: '3'
        e: ${c * 2}
    """)
    assert tree == {"i": 3, "f": 0.5, "b": True, "n": None, "s": "hello", "q": "3", "e": "${c * 2}"}
    assert type(tree["i"]) is int and type(tree["b"]) is bool


def test_dates_and_a_lone_equals_sign_stay_text():
    assert parse("paper: 2015-06-07\nx: =\n") == {"paper": "2015-06-07", "x": "="}


@pytest.mark.parametrize("key", ["on", "off", "no", "yes", "true", "null", "1", "0.5"])
def test_keys_stay_the_text_written(key):
    tree = parse(f"{key}: 1\n")
    assert list(tree) == [key]
    assert isinstance(list(tree)[0], str)


# -- safety ------------------------------------------------------------------


def test_duplicate_key_points_at_the_second_one():
    err = error("""
        a: 1
        b:
          c: 1
          c: 2
    """)
    assert at(err) == (4, 3)
    assert "duplicate key 'c' (first at line 3)" in str(err)


@pytest.mark.parametrize("text, col, tag", [
    ("x: !!python/object/apply:os.system ['ls']\n", 4, "tag:yaml.org,2002:python/object/apply:os.system"),
    ("x: !!python/name:os.system ''\n", 4, "tag:yaml.org,2002:python/name:os.system"),
    ("x: !!binary aGk=\n", 4, "tag:yaml.org,2002:binary"),
    ("x: !!set {a: null}\n", 4, "tag:yaml.org,2002:set"),
    ("x: !!omap [a: 1]\n", 4, "tag:yaml.org,2002:omap"),
    ("x: [1, !custom 2]\n", 8, "!custom"),
    ("x: !!timestamp 2015-06-07\n", 4, "tag:yaml.org,2002:timestamp"),
])
def test_tags_are_refused_where_they_stand(text, col, tag):
    err = error(text)
    assert at(err) == (1, col)
    assert f"YAML tag '{tag}' is not allowed" in str(err)


def test_core_tags_written_out_are_fine():
    assert parse("a: !!int '3'\nb: !!str 4\n") == {"a": 3, "b": "4"}


def test_merge_keys_are_refused():
    err = error("""
        base: &b {k: 3}
        conv: {out: 16, <<: *b}
    """)
    assert at(err) == (2, 17)
    assert "merge keys" in str(err)


def test_non_scalar_keys_are_refused():
    err = error("? [a, b]\n: 1\n")
    assert at(err) == (1, 3) and "a mapping key must be a plain name" in str(err)


def test_aliases_copy_values_and_the_use_is_located_at_the_alias():
    tree = parse("""
        a: &x {k: 3}
        b: *x
        c: [*x, *x]
    """)
    assert tree["b"] == tree["c"][0] == {"k": 3}
    assert tree.loc_of("b") == Loc("t.yaml", 2, 4)
    assert tree["c"].loc_of(1) == Loc("t.yaml", 3, 9)
    assert tree["b"].loc_of("k") == Loc("t.yaml", 1, 11)  # inner values keep the anchor's text
    assert tree["b"] is not tree["c"][0]  # copies, not shared objects


def test_an_alias_as_a_key_is_its_text():
    assert parse("a: &n conv\n*n : 1\n") == {"a": "conv", "conv": 1}


def test_recursive_alias_is_refused_at_the_alias():
    err = error("loop: &l [1, *l]\n")
    assert at(err) == (1, 14)
    assert "refers to itself" in str(err)


def test_recursive_alias_in_a_mapping():
    err = error("a: &m {b: {c: *m}}\n")
    assert at(err) == (1, 15) and "refers to itself" in str(err)


def test_alias_budget_stops_a_bomb_at_the_outermost_alias(monkeypatch):
    monkeypatch.setattr(source, "MAX_VALUES", 50)
    err = error("""
        a: &a [x, x, x, x, x]
        b: &b [*a, *a, *a, *a, *a]
        c: &c [*b, *b, *b, *b, *b]
    """)
    assert "more than 50 values" in str(err)
    # 1 + 6 + 1 + 5*6 = 38 values before line 3; the first *b on line 3 passes 50.
    assert at(err) == (3, 8)


def test_alias_budget_counts_expanded_values_not_text(monkeypatch):
    monkeypatch.setattr(source, "MAX_VALUES", 100)
    parse("a: &a [1, 2, 3]\nb: [*a, *a, *a]\n")  # 1 + 4 + 1 + 3*4 = 18
    with pytest.raises(SpecError, match="alias bomb"):
        parse("a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]\nb: [" + ", ".join(["*a"] * 10) + "]\n")


def test_a_large_spec_without_aliases_is_fine():
    text = "".join(f"k{i}: [{', '.join(['1'] * 20)}]\n" for i in range(500))
    assert len(parse(text)) == 500


# -- the document as a whole --------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_document(text):
    err = error(text)
    assert at(err) == (1, 1) and "the spec is empty" in str(err)


@pytest.mark.parametrize("text, where", [("- a\n- b\n", (1, 1)), ("42\n", (1, 1)), ("\n\n  just text\n", (3, 3)),
                                         ("---\n", (2, 1))])
def test_the_top_level_must_be_a_mapping(text, where):
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "t.yaml")
    assert at(info.value) == where
    assert "a spec must be a mapping" in str(info.value)


def test_invalid_yaml_points_at_the_problem():
    err = error("a: {b: 1\nc: 2\n")
    assert err.line == 2 and "invalid YAML" in str(err)
    err = error("a: 1\n b: 2\n")
    assert at(err) == (2, 3) and "invalid YAML" in str(err)


def test_a_control_character_is_named():
    err = error("a: x\nb: 1\x07\n")
    assert at(err) == (2, 5)
    assert "U+0007" in str(err)


def test_errors_are_one_line():
    err = error("a: {b: 1\nc: 2\n")
    assert "\n" not in str(err)
    assert str(err).startswith(f"t.yaml:{err.line}:{err.column}: error: invalid YAML")


# -- reading files -----------------------------------------------------------


def test_load_text_reads_utf8(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("title: Réseau — test\n", encoding="utf-8")
    assert load_text(path) == (str(path), "title: Réseau — test\n")


def test_load_text_refuses_non_utf8_at_the_bad_byte_in_characters(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes("a: 1\ntitle: Café ".encode() + b"\xe9t\xe9\n")
    with pytest.raises(SpecError) as info:
        load_text(path)
    assert at(info.value) == (2, 13)  # 'title: Café ' is 12 characters (13 bytes)
    assert "not UTF-8 (byte 0xe9)" in str(info.value).replace(" text", "")


def test_load_text_missing_file_and_directory(tmp_path):
    with pytest.raises(SpecError, match="no such spec file"):
        load_text(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a directory"):
        load_text(tmp_path)


# -- the libyaml fast path ---------------------------------------------------

def _located(tree):
    """Every value of a located tree with every location it carries, as plain data."""
    if isinstance(tree, Mapping):
        return ("map", tree.loc, [(k, tree.key_locs[k], tree.value_locs[k], _located(v)) for k, v in tree.items()])
    if isinstance(tree, Sequence):
        return ("seq", tree.loc, [(loc, _located(v)) for loc, v in zip(tree.item_locs, tree)])
    return (type(tree).__name__, tree)


def _spec_texts():
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    files = sorted(root.glob("specs/*.yaml")) + sorted((root / "tests/fixtures/bad_specs").glob("*.yaml"))
    return [pytest.param(f, id=f.name) for f in files]


@pytest.mark.parametrize("path", _spec_texts())
def test_libyaml_and_python_composers_give_the_same_located_tree(path, monkeypatch):
    """The fast path is only an optimisation: values, types and every line:col agree, errors too."""
    def outcome():
        try:
            return _located(parse_yaml(path.read_bytes().decode("utf-8"), str(path)))
        except (SpecError, UnicodeDecodeError) as exc:
            return ("error", str(exc))

    fast = outcome()
    monkeypatch.setattr(source, "_FastLoader", None)
    assert outcome() == fast


def test_libyaml_counts_columns_in_characters_like_the_python_composer(monkeypatch):
    text = "name: 'Größe'\nbody: {ü: {conv: {out: 3}}, b: [relu]}\n"
    fast = _located(parse_yaml(text, "t.yaml"))
    monkeypatch.setattr(source, "_FastLoader", None)
    assert _located(parse_yaml(text, "t.yaml")) == fast


def test_the_fast_path_is_taken_for_a_spec_without_aliases(monkeypatch):
    calls = []
    monkeypatch.setattr(source.yaml, "compose", lambda text, Loader: calls.append(Loader) or Loader(text).get_single_node())
    parse("a: 1\nb: [1, 2]\n")
    assert calls == [source._FastLoader]
    calls.clear()
    parse("a: &x [1]\nb: *x\n")  # an alias: composed again by the Python composer to locate it
    assert calls == [source._FastLoader, source._Loader]
