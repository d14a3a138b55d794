"""Parse: located YAML -> typed items (the first pass of `expand`).

In: a raw entry of a spec's `body` or of a block's body (located YAML from
`source`), and the words a kind key may be (op, block and container names).
Out: one typed item, an `OpUse`, a `BlockUse` or a `ContainerUse`, with its
kind key, the value under it, its meta keys (`from`, `repeat`, `when` and a
container's options) and its locations.  A plain list or mapping of named
layers becomes a `ContainerUse` of kind `seq`.

Parsing is a pure function of the YAML subtree, so each subtree is parsed
once however many block instances use it (`Parser.item` memoises by
identity).  The expansion walk asks for an item when it reaches it, so a
malformed item inside a switched-off (`when: false`) part or an unused block
is never reported, and errors come in the order of the walk.  Parameter
values (`$expr`) are left as written: `params` and `expand` evaluate them.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace
from typing import Any, Collection, Optional

from .errors import Loc, SpecError, did_you_mean, edit_distance, shown
from .graph import is_module_attribute
from .source import Mapping, Sequence
from .spec import BRANCHING_CONTAINERS, CONTAINER_KEYS, CONTAINER_OPTIONS, META_KEYS, RESERVED_NAMES

# Words that a chain's name must not be a typo of (see `Parser.check_not_a_typo`).
KEYWORDS = (*CONTAINER_KEYS, *META_KEYS, *sorted({o for opts in CONTAINER_OPTIONS.values() for o in opts}))
JOIN_OPS = BRANCHING_CONTAINERS  # container keys that are also ops: `{concat: null, from: [a, b]}`


@dataclass(frozen=True)
class Item:
    """An item of a spec: its kind key, the value under it, its meta keys and where it was written."""

    kind: str  # an op name, a block name, or a container key
    value: Any  # the (located) YAML under the kind key
    meta: dict[str, Any]  # every other key of the item: `from`, `repeat`, `when`, container options
    loc: Loc  # the kind key
    raw: Mapping  # the item's mapping, for the locations of its meta keys

    def without(self, *keys: str) -> "Item":
        """The same item without the meta keys `keys` (a repeat's later copies drop `from` and `repeat`)."""
        return replace(self, meta={k: v for k, v in self.meta.items() if k not in keys})

    def meta_loc(self, key: str) -> Loc:
        return self.raw.loc_of(key)


@dataclass(frozen=True)
class OpUse(Item):
    """One op: `{conv: {out: 64, k: 3}}`, `relu`, or a join op `{add: null, from: [a, b]}`."""


@dataclass(frozen=True)
class BlockUse(Item):
    """An instance of a block template: `{inception: [64, 96, ...]}`, `{unit: {c: 8}}`."""


@dataclass(frozen=True)
class ContainerUse(Item):
    """A `seq`, `concat`, `add` or `residual` container (a plain list or mapping is a `seq`)."""


def located(value: dict, loc: Loc) -> Mapping:
    out = Mapping(value)
    out.loc, out.key_locs, out.value_locs = loc, {k: loc for k in value}, {k: loc for k in value}
    return out


class Parser:
    """Classifies raw entries into typed items, given the names that may be kind keys."""

    def __init__(self, ops: Collection[str], blocks: Collection[str], spec_ops: list[str]):
        self.ops, self.blocks, self.spec_ops = set(ops), set(blocks), spec_ops
        self.kinds = self.ops | self.blocks | set(CONTAINER_KEYS)
        # (id(raw), id(loc)) -> (raw, loc, item); holding raw and loc keeps their ids from being reused.
        self.memo: dict[tuple[int, int], tuple[Any, Loc, Item]] = {}
        # kind -> the keys an item of that kind may hold beside it: the meta keys and the container's options
        self.allowed: dict[str, frozenset[str]] = {}

    def allowed_beside(self, kind: str) -> frozenset[str]:
        allowed = self.allowed.get(kind)
        if allowed is None:
            allowed = self.allowed[kind] = frozenset(META_KEYS) | frozenset(CONTAINER_OPTIONS.get(kind, ()))
        return allowed

    def item(self, raw: Any, loc: Loc) -> Item:
        key = (id(raw), id(loc))
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = (raw, loc, self._parse(raw, loc))
        return hit[2]

    def _make(self, kind: str, value: Any, meta: dict[str, Any], loc: Loc, raw: Mapping) -> Item:
        if kind in CONTAINER_KEYS and value is None and kind in self.spec_ops:
            # `{add: null, from: [a, b]}`: a container keyword that is also an op, used as the op itself;
            # its container options (`act`) are the op's arguments.
            options = [k for k in meta if k in CONTAINER_OPTIONS.get(kind, ())]
            args = Mapping({k: meta[k] for k in options})
            args.loc, args.key_locs, args.value_locs = raw.loc, {k: raw.key_loc(k) for k in options}, \
                {k: raw.loc_of(k) for k in options}
            return OpUse(kind, args, {k: v for k, v in meta.items() if k not in options}, loc, raw)
        if kind in CONTAINER_KEYS:
            return ContainerUse(kind, value, meta, loc, raw)
        if kind in self.blocks:
            return BlockUse(kind, value, meta, loc, raw)
        return OpUse(kind, value, meta, loc, raw)

    def _seq(self, raw: Any, loc: Loc) -> Item:
        return ContainerUse("seq", raw, {}, loc, located({"seq": raw}, loc))

    def _parse(self, raw: Any, loc: Loc) -> Item:
        if isinstance(raw, str):
            if raw in self.kinds and (raw not in CONTAINER_KEYS or raw in self.spec_ops):
                return self._make(raw, None, {}, loc, located({}, loc))
            raise self.unknown(raw, loc)
        if isinstance(raw, Sequence):
            return self._seq(raw, loc)
        if not isinstance(raw, Mapping) or not raw:
            raise SpecError(f"expected a layer (e.g. {{conv: {{out: 64, k: 3}}}}), got {shown(raw)}", loc)
        kinds = self.kind_keys(raw)
        if len(kinds) >= 2 and not all(self.is_layer(raw[k]) for k in kinds):
            # `{rbf: {out: 3}, scale: 2}`: op arguments, not a chain of layers named like ops.
            raise SpecError(f"one item holds two ops, '{kinds[0]}' and '{kinds[1]}'", raw.key_loc(kinds[1]),
                            hint=f"give each op its own item: - {{{kinds[0]}: ...}} then - {{{kinds[1]}: ...}}")
        if self.is_item(raw):
            kind = kinds[0]
            allowed = self.allowed_beside(kind)
            for key in raw:
                if key != kind and key not in allowed:
                    raise SpecError(f"unknown key '{key}' beside '{kind}'", raw.key_loc(key),
                                    hint=did_you_mean(key, allowed) or f"allowed here: {', '.join(sorted(allowed))}")
            meta = {k: v for k, v in raw.items() if k != kind}
            return self._make(kind, raw[kind], meta, raw.key_loc(kind), raw)
        if not kinds and (len(raw) == 1 or any(k in META_KEYS for k in raw)):
            key = next(k for k in raw if k not in META_KEYS) if any(k not in META_KEYS for k in raw) else None
            if key is None:
                raise SpecError("this item has 'from'/'repeat'/'when' but no op or block", raw.loc)
            if isinstance(raw[key], Sequence) and not all(self.is_item(v) for v in raw[key]):
                raise self.unknown(key, raw.key_loc(key))
            if not self.is_item(raw[key]) and not (isinstance(raw[key], Mapping) and len(raw[key]) > 1
                                                   and all(self.is_item(v) for v in raw[key].values())):
                raise self.unknown(key, raw.key_loc(key))
        return self._seq(raw, loc)

    def is_item(self, raw: Any) -> bool:
        """Whether `raw` is one item (rather than a mapping of named layers)."""
        if isinstance(raw, str):
            return raw in self.kinds
        if isinstance(raw, Sequence):
            return True
        if not isinstance(raw, Mapping):
            return False
        kinds = self.kind_keys(raw)
        if len(kinds) == 1 and kinds[0] in self.ops and kinds[0] not in CONTAINER_KEYS and self._names_a_chain(raw[kinds[0]]):
            return False  # `conv: [..]` or `conv: {seq: ..}`: a layer named like an op, holding a chain
        if len(kinds) == 1:
            allowed = self.allowed_beside(kinds[0])
            others = [k for k in raw if k != kinds[0]]
            return all(k in allowed or not isinstance(raw[k], (Mapping, Sequence)) for k in others)
        return False

    @staticmethod
    def _names_a_chain(value: Any) -> bool:
        """Whether the value under an op's name is layers rather than the op's arguments: a list (arguments are a
        mapping), or a mapping holding a container keyword (no op has an argument of that name)."""
        return isinstance(value, Sequence) or (isinstance(value, Mapping) and any(k in CONTAINER_KEYS for k in value))

    def is_layer(self, value: Any) -> bool:
        """Whether `value` can stand where a layer does: an item, a list, or a mapping of named layers."""
        if self.is_item(value) or isinstance(value, Sequence):
            return True
        return isinstance(value, Mapping) and bool(value) and all(
            self.is_item(v) or isinstance(v, (Mapping, Sequence)) for v in value.values())

    def kind_keys(self, raw: Mapping) -> list[str]:
        """The op, block or container keys of a mapping (a container's options, like `scale`, are not)."""
        kinds = [k for k in raw if k in self.kinds]
        if len(kinds) < 2:
            return kinds
        options = {o for k in kinds if k in CONTAINER_OPTIONS for o in CONTAINER_OPTIONS[k]}
        return [k for k in kinds if k not in options]

    def unknown(self, word: str, loc: Loc) -> SpecError:
        return SpecError(f"unknown op or block '{word}'", loc,
                         hint=did_you_mean(word, self.kinds) or f"ops: {', '.join(self.spec_ops)}")

    def check_not_a_typo(self, key: str, entry: Any, key_loc: Loc, loc: Loc) -> None:
        """Refuse a chain whose name is one typo away from a keyword (`concta:`, `residul:`, `ad:`).

        As written, such a name is legal: it names a plain chain, and archc
        would build another network than the one meant.  A layer named like
        an op (`conv: {conv: ...}`) is fine, and so is an explicit `NAME: {seq: ...}`.
        """
        if key in KEYWORDS or key in self.kinds or len(key) < 2:
            return
        if not (isinstance(entry, Sequence) or (isinstance(entry, Mapping) and "seq" not in entry
                                                 and self.item(entry, loc).kind == "seq")):
            return
        word = _misspelt_keyword(key)
        if word is not None:
            what = f"the '{word}' container" if word in CONTAINER_KEYS else f"the '{word}' key"
            raise SpecError(f"'{key}' looks like a misspelt '{word}'; as written it names a plain chain of "
                            "layers", key_loc, hint=f"write '{word}:' for {what}, or '{key}: {{seq: ...}}' "
                            "if a chain of that name is meant")


@functools.lru_cache(maxsize=4096)  # a spec names its chains with the same few words many times over
def _misspelt_keyword(key: str) -> Optional[str]:
    """The first keyword that `key` is one or two typos away from, or None."""
    for word in KEYWORDS:
        # Short keywords tolerate one slip, long ones two; `se` (squeeze-and-excitation) is a name, not `seq`.
        slips = 2 if len(word) >= 7 else 1
        if abs(len(key) - len(word)) > slips:  # the distance is at least the difference in length
            continue
        if edit_distance(key, word) <= slips and not (word == "seq" and len(key) < 3):
            return word
    return None


# A layer's name: an identifier that may also hold '-' (torchvision's RegNet has `block1-0`), or a number.
LAYER_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$|^[0-9]+$")


def check_name(key: str, loc: Loc) -> None:
    """Refuse a layer name that is not an identifier (or a digit string), is reserved, or clashes with torch."""
    if not LAYER_NAME.match(key):
        raise SpecError(f"{shown(key)} is not a valid layer name", loc,
                        hint="use letters, digits, '_' and '-', not starting with a digit or '-' (or only digits)")
    if key in RESERVED_NAMES:
        raise SpecError(f"'{key}' is reserved for the model's input", loc, hint="choose another name")
    if is_module_attribute(key):
        raise SpecError(f"a layer cannot be called '{key}': every torch module already has an attribute "
                        "of that name", loc, hint=f"rename it, e.g. '{key.strip('_')}_'")
