"""YAML text -> a located tree of plain values.

In: the bytes of a spec file.  Out: nested `Mapping` / `Sequence` containers
(dict and list subclasses) holding plain scalars (str, int, float, bool,
None); every container knows the `Loc` of itself and of each of its keys and
values, so later stages can point at the exact text behind any value.

Loading is safe by construction: only the YAML core schema's tags are
accepted (no `!!python/...`), duplicate keys are errors instead of silently
winning, and aliases may not expand past a fixed budget (no "billion laughs").
Hostile input gets a located error too, never a hang or a crash: only regular
files are read, and size, nesting depth and integer length are bounded.
"""

from __future__ import annotations

import bisect
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from .errors import Loc, SpecError, shown

# Expanding aliases may copy a subtree many times; a spec of a real network has
# a few thousand values, so this is generous and still stops an alias bomb fast.
MAX_VALUES = 200_000
# The largest spec file read.  The zoo's largest spec is a few KB; 16 MiB is
# thousands of times that, and still parses in seconds instead of exhausting memory.
MAX_SPEC_BYTES = 16 * 1024 * 1024
# The deepest nesting of YAML values.  A real spec nests under 15 levels; at 100 the
# recursive composer and converter stay far below Python's recursion limit (about
# 3 frames a level), and libyaml's own limit (1,000) is never the one that speaks.
MAX_DEPTH = 100
# The most digits in an integer literal.  A network's numbers have a handful; Python
# refuses to read more than 4,300 (int max_str_digits), and huge ints only make trouble later.
MAX_INT_DIGITS = 100

# What ends a line, to YAML (and so to every line and column archc reports):
# CR LF, a lone CR, LF, NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
# A `${` that starts a plain (unquoted) scalar: in a flow collection its `{` opens a mapping.
_UNQUOTED_EXPR = re.compile(r"(?:^|[\s\[{,:])\$\{")
_EXPR_HINT = 'quote expressions: out: "${c * 2}", not out: ${c * 2}'


def line_starts(text: str) -> list[int]:
    """The offset in `text` at which each line starts, lines broken as YAML breaks them."""
    return [0, *(m.end() for m in LINE_BREAK.finditer(text))]


def position(text: str, offset: int) -> tuple[int, int]:
    """The 1-based (line, column) of character `offset` in `text`, counted as YAML counts."""
    starts = line_starts(text)
    line = bisect.bisect_right(starts, offset)
    return line, offset - starts[line - 1] + 1


def _line_text(text: str, line: int) -> str:
    """Line `line` (1-based) of `text`, without its line break."""
    starts = line_starts(text)
    if not 1 <= line <= len(starts):
        return ""
    end = starts[line] if line < len(starts) else len(text)
    return LINE_BREAK.sub("", text[starts[line - 1] : end])

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_STR_TAG = "tag:yaml.org,2002:str"
_INT_TAG = "tag:yaml.org,2002:int"
_NULL_TAG = "tag:yaml.org,2002:null"
# A plain decimal integer that YAML 1.1 reads as decimal (a leading 0 makes it octal), short enough for MAX_INT_DIGITS.
_DECIMAL = re.compile(r"[1-9][0-9]{0,%d}|0" % (MAX_INT_DIGITS - 1))
# What each core scalar tag holds, for the hint when a tagged text does not fit its tag.
_TAG_HOLDS = {"int": "a whole number", "float": "a number", "bool": "true or false", "null": "null or ~"}
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"


class Mapping(dict):
    """A YAML mapping that remembers where it and each key and value stand."""

    loc: Loc
    key_locs: dict[str, Loc]
    value_locs: dict[str, Loc]

    def loc_of(self, key: str) -> Loc:
        return self.value_locs.get(key, self.loc)

    def key_loc(self, key: str) -> Loc:
        return self.key_locs.get(key, self.loc)


class Sequence(list):
    """A YAML sequence that remembers where it and each item stand."""

    loc: Loc
    item_locs: list[Loc]

    def loc_of(self, index: int) -> Loc:
        return self.item_locs[index] if 0 <= index < len(self.item_locs) else self.loc


def loc_of(container: Any, key: Any, fallback: Loc) -> Loc:
    """The location of `container[key]`, or `fallback` where none is known."""
    if isinstance(container, (Mapping, Sequence)):
        return container.loc_of(key)
    return fallback


def locate(tree: Any, path: tuple, fallback: Loc) -> Loc:
    """The location of the value at `path` (keys and indices) below `tree`."""
    loc = getattr(tree, "loc", fallback)
    node = tree
    for step in path:
        if isinstance(node, Mapping) and step in node:
            loc, node = node.loc_of(step), node[step]
        elif isinstance(node, Sequence) and isinstance(step, int) and 0 <= step < len(node):
            loc, node = node.loc_of(step), node[step]
        else:
            break
    return loc


def _not_a_file(mode: int) -> str | None:
    """What a file of this `st_mode` is, if it is not a regular file."""
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def load_text(path: str | Path) -> tuple[str, str]:
    """Read a spec file as UTF-8; returns (display path, text).

    Only a regular file of at most MAX_SPEC_BYTES is read: /dev/zero would fill
    memory, and a FIFO without a writer would block forever.
    """
    name = str(path)
    where = Loc(name, 1, 1)
    try:
        # The type is checked before opening (opening some devices has effects), and again on
        # the open file, which may have been swapped meanwhile; O_NONBLOCK keeps open() of a FIFO from blocking.
        kind = _not_a_file(os.stat(path).st_mode)
        if kind is None:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())
                kind = _not_a_file(info.st_mode)
                size = info.st_size
                if kind is None and size <= MAX_SPEC_BYTES:
                    data = f.read(MAX_SPEC_BYTES + 1)  # +1: a file that grew meanwhile is still caught
                    size = max(size, len(data))
    except FileNotFoundError:
        raise SpecError(f"no such spec file '{name}'", where) from None
    except OSError as exc:
        raise SpecError(f"cannot read '{name}': {exc.strerror}", where) from None
    if kind is not None:
        raise SpecError(f"'{name}' is {kind}, not a spec file", where, hint="name a YAML file") from None
    if size > MAX_SPEC_BYTES:
        raise SpecError(f"'{name}' is too large: {size:,} bytes, limit {MAX_SPEC_BYTES // 2**20} MiB", where,
                        hint="a spec is a text file of a few KB") from None
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The bytes before the bad one are valid UTF-8; columns count characters, not bytes.
        before = data[: exc.start].decode("utf-8")
        raise SpecError(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})",
            Loc(name, *position(before, len(before))),
            hint="save the spec as UTF-8",
        ) from None


class InvalidYAML(SpecError):
    """The text is not YAML at all (as opposed to YAML that archc refuses)."""


def parse_yaml(text: str, path: str) -> Mapping:
    """Parse spec text into a located tree; the top level must be a mapping."""
    tree, node = _parse(text, path)
    if node is None:
        raise SpecError(
            "the spec is empty", Loc(path, 1, 1), hint="start with 'archc: 1', 'name:', 'input:' and 'body:'"
        )
    if not isinstance(tree, Mapping):
        raise SpecError("a spec must be a mapping of keys such as 'archc', 'name', 'input', 'body'", _loc(path, node))
    return tree


def parse_value(text: str, path: str) -> Any:
    """Any YAML text (e.g. a `--set` value) -> a plain value, under the rules and bounds of a spec.

    Raises `InvalidYAML` where the text is not YAML, `SpecError` where archc refuses it.
    """
    return _parse(text, path)[0]


def _parse(text: str, path: str) -> tuple[Any, yaml.Node | None]:
    """(located tree, root node); (None, None) for an empty document."""
    node = _compose_fast(text)
    if node is not None:
        try:
            return _Converter(path, fast=True).convert(node), node
        except _SharedNode:
            pass  # aliases: compose again, keeping where each alias stands
    try:
        node = yaml.compose(text, Loader=_Loader)
    except _TooDeep as exc:
        raise _too_deep(path, exc.event) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        # `out: ${c * 2}` in a flow mapping is the usual cause: the `{` of `${` opens a mapping there.
        marks = [m for m in (exc.problem_mark, exc.context_mark) if m]
        unquoted = any(_UNQUOTED_EXPR.search(_line_text(text, m.line + 1)) for m in marks)
        raise InvalidYAML(f"invalid YAML: {problem}", loc, hint=_EXPR_HINT if unquoted else None) from None
    except yaml.reader.ReaderError as exc:
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        loc = Loc(path, *position(text, exc.position))
        raise InvalidYAML(f"invalid YAML: {exc.reason}: character {char}", loc) from None
    except yaml.YAMLError as exc:
        raise InvalidYAML(f"invalid YAML: {exc}", Loc(path, 1, 1)) from None
    if node is None:
        return None, None
    return _Converter(path).convert(node), node


def _compose_fast(text: str) -> Any:
    """Compose with libyaml (about 15x faster than PyYAML's Python composer), or None.

    None stands for "let the Python composer do it": libyaml is missing, the
    text is empty, or it is not valid YAML (the Python composer's messages and
    marks are the ones the error fixtures pin down, and errors are rare).
    """
    if _FastLoader is None:
        return None
    try:
        return yaml.compose(text, Loader=_FastLoader)
    except yaml.YAMLError:
        return None


# `Loc(path, line, column)` without the Python-level `__new__` a NamedTuple has: the converter makes one for
# every key, value and item of a spec.
_new_loc = tuple.__new__


def _loc(path: str, node: Any) -> Loc:
    mark = node.start_mark
    return _new_loc(Loc, (path, mark.line + 1, mark.column + 1))


def _too_deep(path: str, at: Any) -> SpecError:
    return SpecError(f"the spec nests deeper than {MAX_DEPTH} levels", _loc(path, at),
                     hint="a network's spec nests a few levels; use blocks and 'repeat' for structure")


class _Alias:
    """A use of an anchored node (`*name`): the shared node, and where the alias stands."""

    def __init__(self, target: yaml.Node, start_mark: yaml.Mark):
        self.target, self.start_mark = target, start_mark


class _Loader(yaml.SafeLoader):
    """Composes like SafeLoader, but keeps each alias as an `_Alias`, so errors can point at it.

    PyYAML's composer recurses once per level, so nesting is bounded here, at
    MAX_DEPTH, before a deep `[[[[...` reaches Python's recursion limit.
    """

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.depth >= MAX_DEPTH:
            raise _TooDeep(self.peek_event())
        self.depth += 1
        try:
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                return _Alias(super().compose_node(parent, index), mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# No path resolvers, whatever other code in the process adds to PyYAML's loaders: a value's tag depends on
# its text alone.
_Loader.yaml_path_resolvers = {}
# Untagged dates (`paper: 2015-06-07`) and a lone `=` stay text instead of becoming
# timestamp / value tags that the converter would refuse as if the user had written a tag.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _TooDeep(Exception):
    """The composer met a node past MAX_DEPTH (it does not know the spec's path)."""

    def __init__(self, event: yaml.Event):
        self.event = event


class _SharedNode(Exception):
    """libyaml's composer made an alias the very node it names, losing where the alias stands."""


# libyaml's composer recurses in C, once per level: only libyaml 0.2.6 and later, which stop at
# 1,000 levels, are safe from a deep `[[[[...` (older ones would overflow the C stack).
if yaml.__with_libyaml__ and yaml._yaml.get_version() >= (0, 2, 6):
    class _FastLoader(yaml.CSafeLoader):
        """libyaml's parser and composer, resolving plain scalars as `_Loader` does."""

        def __init__(self, stream: Any):
            super().__init__(stream)
            self.scalar_tags: dict[tuple, str] = {}

        def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
            # libyaml's composer asks PyYAML's (Python) resolver for every scalar's tag; a spec repeats
            # the same few words and numbers, and a scalar's tag depends on its text and style alone.
            if kind is not _ScalarNode:  # an untagged collection: what the resolver says, without path resolvers
                return _MAP_TAG if kind is _MappingNode else _SEQ_TAG
            key = (value, implicit)
            tag = self.scalar_tags.get(key)
            if tag is None:
                tag = self.scalar_tags[key] = super().resolve(kind, value, implicit)
            return tag

    _FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
    _FastLoader.yaml_path_resolvers = {}  # as `_Loader`'s
    _ScalarNode, _MappingNode = yaml.ScalarNode, yaml.MappingNode
    # libyaml's composer calls these around every node, for the path resolvers there are none of: builtins
    # that do nothing, in place of two Python calls per node.
    _FastLoader.descend_resolver = {}.get  # (parent, index) -> index, ignored
    _FastLoader.ascend_resolver = [].clear  # () -> None
else:  # PyYAML built without (a safe) libyaml: every spec goes through `_Loader`
    _FastLoader = None


class _Converter:
    """Walks a composed YAML node graph, building located plain values.

    `fast=True` is for a libyaml-composed graph, where an alias is the very
    node it names: meeting a node twice raises `_SharedNode`, so that the
    caller composes again with `_Loader`, which keeps each alias's mark.
    """

    def __init__(self, path: str, fast: bool = False):
        self.path = path
        self.seen: set[int] | None = set() if fast else None
        self.count = 0
        self.active: set[int] = set()
        self.aliases: list[_Alias] = []  # the aliases being expanded, outermost first
        self.scalars = SafeConstructor()

    def convert(self, node: Any, depth: int = 1) -> Any:
        """The plain value of `node`, which stands `depth` levels deep (the root is 1)."""
        if depth > MAX_DEPTH:  # libyaml composes up to 1,000 levels, and aliases can stack subtrees
            raise _too_deep(self.path, self.aliases[0] if self.aliases else node)
        if isinstance(node, _Alias):
            if id(node.target) in self.active:
                raise SpecError("a YAML alias refers to itself", _loc(self.path, node))
            self.aliases.append(node)
            try:
                return self.convert(node.target, depth)
            finally:
                self.aliases.pop()
        if self.seen is not None:
            if id(node) in self.seen:
                raise _SharedNode
            self.seen.add(id(node))
        self.count += 1
        if self.count > MAX_VALUES:
            raise SpecError(
                f"the spec expands to more than {MAX_VALUES:,} values (an alias bomb?)",
                _loc(self.path, self.aliases[0] if self.aliases else node),
                hint="use blocks and 'repeat' instead of deeply nested YAML aliases",
            )
        if id(node) in self.active:
            raise SpecError("a YAML alias refers to itself", _loc(self.path, node))
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, depth)
            return self._sequence(node, depth)
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise self._bad_tag(node)
        if node.tag == _STR_TAG:  # most scalars; what SafeConstructor would return for them
            return node.value
        text = node.value
        if node.tag == _INT_TAG and _DECIMAL.fullmatch(text):  # most numbers: what construct_yaml_int reads
            return int(text)
        short = node.tag.replace("tag:yaml.org,2002:", "!!")
        digits = sum(ch.isalnum() for ch in text) if node.tag == _INT_TAG else 0  # not `_` or a sign
        if digits > MAX_INT_DIGITS:  # checked before int() reads it: past 4,300 digits that raises
            raise SpecError(f"integer literal too long: {digits:,} digits, limit {MAX_INT_DIGITS}",
                            _loc(self.path, node), hint="a size or count in a network has a few digits")
        try:
            if node.tag == _NULL_TAG and text not in ("", "~", "null", "Null", "NULL"):
                raise ValueError  # SafeConstructor would read any text at all as null
            return self.scalars.yaml_constructors[node.tag](self.scalars, node)
        except (ValueError, KeyError, IndexError, TypeError):  # what SafeConstructor raises on text that does not fit
            raise SpecError(f"YAML tag '{short}' does not fit the text {shown(text)}", _loc(self.path, node),
                            hint=f"write {_TAG_HOLDS[short[2:]]}, or remove the tag") from None

    def _bad_tag(self, node: yaml.Node) -> SpecError:
        return SpecError(
            f"YAML tag {shown(node.tag)} is not allowed in a spec",
            _loc(self.path, node),
            hint="specs hold plain values only: remove the '!' tag",
        )

    def _mapping(self, node: yaml.MappingNode, depth: int) -> Mapping:
        if node.tag != _MAP_TAG:
            raise self._bad_tag(node)
        path, seen, text = self.path, self.seen, self._text
        out = Mapping()
        key_locs: dict[str, Loc] = {}
        value_locs: dict[str, Loc] = {}
        out.loc, out.key_locs, out.value_locs = _loc(path, node), key_locs, value_locs
        for key_node, value_node in node.value:
            if isinstance(key_node, _Alias):
                key_node = key_node.target
            elif seen is not None:
                if id(key_node) in seen:
                    raise _SharedNode
                seen.add(id(key_node))
            if depth >= MAX_DEPTH:  # keys are a level deeper too, as the composer counts them
                raise _too_deep(path, key_node)
            tag = key_node.tag
            if tag == "tag:yaml.org,2002:merge":
                raise SpecError(
                    "YAML merge keys ('<<') are not supported", _loc(path, key_node),
                    hint="use 'defaults' or a block instead",
                )
            if tag not in _SCALAR_TAGS or not isinstance(key_node, yaml.ScalarNode):
                raise SpecError("a mapping key must be a plain name", _loc(path, key_node))
            # The key's own text, not its YAML 1.1 reading: `on:` or `no:` stay names.
            key = key_node.value
            if key in out:
                raise SpecError(
                    f"duplicate key {shown(key)} (first at line {key_locs[key].line})",
                    _loc(path, key_node), hint="each name may appear once in a mapping",
                )
            mark = key_node.start_mark
            key_locs[key] = _new_loc(Loc, (path, mark.line + 1, mark.column + 1))
            mark = value_node.start_mark
            value_locs[key] = _new_loc(Loc, (path, mark.line + 1, mark.column + 1))
            out[key] = text(value_node, depth + 1)
        return out

    def _sequence(self, node: yaml.SequenceNode, depth: int) -> Sequence:
        if node.tag != _SEQ_TAG:
            raise self._bad_tag(node)
        out = Sequence()
        out.loc, out.item_locs = _loc(self.path, node), []
        for item in node.value:
            mark = item.start_mark
            out.item_locs.append(_new_loc(Loc, (self.path, mark.line + 1, mark.column + 1)))
            out.append(self._text(item, depth + 1))
        return out

    def _text(self, node: Any, depth: int) -> Any:
        """`convert(node, depth)`, with a shortcut for the most common value, a scalar of a libyaml-composed
        graph met for the first time, that makes the same checks."""
        seen = self.seen
        if (type(node) is yaml.ScalarNode and seen is not None and depth <= MAX_DEPTH
                and self.count < MAX_VALUES and id(node) not in seen):
            seen.add(id(node))
            self.count += 1
            return self._scalar(node)
        return self.convert(node, depth)
