"""YAML text -> a located tree of plain values.

In: the bytes of a spec file.  Out: nested `Mapping` / `Sequence` containers
(dict and list subclasses) holding plain scalars (str, int, float, bool,
None); every container knows the `Loc` of itself and of each of its keys and
values, so later stages can point at the exact text behind any value.

Loading is safe by construction: only the YAML core schema's tags are
accepted (no `!!python/...`), duplicate keys are errors instead of silently
winning, and aliases may not expand past a fixed budget (no "billion laughs").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from .errors import Loc, SpecError

# Expanding aliases may copy a subtree many times; a spec of a real network has
# a few thousand values, so this is generous and still stops an alias bomb fast.
MAX_VALUES = 200_000

_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}
_STR_TAG = "tag:yaml.org,2002:str"
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


def load_text(path: str | Path) -> tuple[str, str]:
    """Read a spec file as UTF-8; returns (display path, text)."""
    shown = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise SpecError(f"no such spec file '{shown}'", Loc(shown, 1, 1)) from None
    except IsADirectoryError:
        raise SpecError(f"'{shown}' is a directory, not a spec file", Loc(shown, 1, 1)) from None
    except OSError as exc:
        raise SpecError(f"cannot read '{shown}': {exc.strerror}", Loc(shown, 1, 1)) from None
    try:
        return shown, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        # Columns count characters, not bytes: the bytes before the bad one are valid UTF-8.
        column = len(before[before.rfind(b"\n") + 1 :].decode("utf-8")) + 1
        raise SpecError(
            f"the file is not UTF-8 text (byte 0x{data[exc.start]:02x})",
            Loc(shown, line, column),
            hint="save the spec as UTF-8",
        ) from None


def parse_yaml(text: str, path: str) -> Mapping:
    """Parse spec text into a located tree; the top level must be a mapping."""
    node = _compose_fast(text)
    if node is not None:
        try:
            return _as_spec(_Converter(path, fast=True).convert(node), node, path)
        except _SharedNode:
            pass  # aliases: compose again, keeping where each alias stands
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        loc = Loc(path, mark.line + 1, mark.column + 1) if mark else Loc(path, 1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"invalid YAML: {problem}", loc) from None
    except yaml.reader.ReaderError as exc:
        before = text[: exc.position]
        loc = Loc(path, before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1)
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise SpecError(f"invalid YAML: {exc.reason}: character {char}", loc) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}", Loc(path, 1, 1)) from None
    if node is None:
        raise SpecError(
            "the spec is empty", Loc(path, 1, 1), hint="start with 'archc: 1', 'name:', 'input:' and 'body:'"
        )
    return _as_spec(_Converter(path).convert(node), node, path)


def _as_spec(tree: Any, node: yaml.Node, path: str) -> Mapping:
    if not isinstance(tree, Mapping):
        raise SpecError("a spec must be a mapping of keys such as 'archc', 'name', 'input', 'body'", _loc(path, node))
    return tree


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


def _loc(path: str, node: yaml.Node) -> Loc:
    return Loc(path, node.start_mark.line + 1, node.start_mark.column + 1)


class _Alias:
    """A use of an anchored node (`*name`): the shared node, and where the alias stands."""

    def __init__(self, target: yaml.Node, start_mark: yaml.Mark):
        self.target, self.start_mark = target, start_mark


class _Loader(yaml.SafeLoader):
    """Composes like SafeLoader, but keeps each alias as an `_Alias`, so errors can point at it."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            return _Alias(super().compose_node(parent, index), mark)
        return super().compose_node(parent, index)


# Untagged dates (`paper: 2015-06-07`) and a lone `=` stay text instead of becoming
# timestamp / value tags that the converter would refuse as if the user had written a tag.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _SharedNode(Exception):
    """libyaml's composer made an alias the very node it names, losing where the alias stands."""


if yaml.__with_libyaml__:
    class _FastLoader(yaml.CSafeLoader):
        """libyaml's parser and composer, resolving plain scalars as `_Loader` does."""

    _FastLoader.yaml_implicit_resolvers = _Loader.yaml_implicit_resolvers
else:  # PyYAML built without libyaml: every spec goes through `_Loader`
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

    def convert(self, node: Any) -> Any:
        if isinstance(node, _Alias):
            if id(node.target) in self.active:
                raise SpecError("a YAML alias refers to itself", _loc(self.path, node))
            self.aliases.append(node)
            try:
                return self.convert(node.target)
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
            if node.tag not in _SCALAR_TAGS:
                raise self._bad_tag(node)
            if node.tag == _STR_TAG:  # most scalars; what SafeConstructor would return for them
                return node.value
            return self.scalars.yaml_constructors[node.tag](self.scalars, node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node)
            return self._sequence(node)
        finally:
            self.active.discard(id(node))

    def _bad_tag(self, node: yaml.Node) -> SpecError:
        return SpecError(
            f"YAML tag '{node.tag}' is not allowed in a spec",
            _loc(self.path, node),
            hint="specs hold plain values only: remove the '!' tag",
        )

    def _mapping(self, node: yaml.MappingNode) -> Mapping:
        if node.tag != _MAP_TAG:
            raise self._bad_tag(node)
        out = Mapping()
        out.loc, out.key_locs, out.value_locs = _loc(self.path, node), {}, {}
        for key_node, value_node in node.value:
            if isinstance(key_node, _Alias):
                key_node = key_node.target
            elif self.seen is not None:
                if id(key_node) in self.seen:
                    raise _SharedNode
                self.seen.add(id(key_node))
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError(
                    "YAML merge keys ('<<') are not supported", _loc(self.path, key_node),
                    hint="use 'defaults' or a block instead",
                )
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _SCALAR_TAGS:
                raise SpecError("a mapping key must be a plain name", _loc(self.path, key_node))
            # The key's own text, not its YAML 1.1 reading: `on:` or `no:` stay names.
            key = key_node.value
            if key in out:
                raise SpecError(
                    f"duplicate key '{key}' (first at line {out.key_locs[key].line})",
                    _loc(self.path, key_node), hint="each name may appear once in a mapping",
                )
            out.key_locs[key] = _loc(self.path, key_node)
            out.value_locs[key] = _loc(self.path, value_node)
            out[key] = self.convert(value_node)
        return out

    def _sequence(self, node: yaml.SequenceNode) -> Sequence:
        if node.tag != _SEQ_TAG:
            raise self._bad_tag(node)
        out = Sequence()
        out.loc, out.item_locs = _loc(self.path, node), []
        for item in node.value:
            out.item_locs.append(_loc(self.path, item))
            out.append(self.convert(item))
        return out
