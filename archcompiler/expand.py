"""`Spec` -> `Graph`: blocks instantiated, parameters bound, wiring resolved.

In: a `Spec` and parameter overrides.  Out: a `Graph` of op nodes named by
their full dotted paths, the tree of scopes (block instances and named
containers), and the outputs.  This stage applies per-op `defaults`,
evaluates `$param` expressions, validates each op's arguments with its
pydantic model, expands `repeat`, drops items whose `when:` is false,
resolves `from:` references (checking for cycles) and marks the nodes that
only training-mode outputs need.  It never looks at tensor shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, Hashable, Iterable, Iterator, Optional

import networkx as nx

from . import expr
from .errors import Loc, SpecError, did_you_mean, edit_distance, shorten, shown
from .graph import INPUT, Graph, Node, Output, Scope, declared_in_order, is_module_attribute
from .ops import OPS, JoinArgs, spec_ops
from .source import Mapping, Sequence, loc_of
from .spec import CONTAINER_KEYS, CONTAINER_OPTIONS, META_KEYS, NAME, RESERVED_NAMES, OutputSpec, Spec, validate

MAX_NODES = 100_000  # no real CNN comes near; stops a runaway `repeat`
# Words that a chain's name must not be a typo of (see `_check_not_a_typo`).
KEYWORDS = (*CONTAINER_KEYS, *META_KEYS, *sorted({o for opts in CONTAINER_OPTIONS.values() for o in opts}))


@dataclass(frozen=True)
class _Ctx:
    vars: dict[str, Any]  # parameters visible here
    defaults: tuple[Mapping, ...]  # per-op defaults, outermost first
    scopes: tuple[str, ...]  # enclosing scope ids
    names: "_Names"  # where `from:` looks names up
    blocks: tuple[str, ...] = ()  # block instantiation stack, for recursion errors
    block: Optional[tuple[str, dict[str, Any]]] = None  # block instance awaiting its root scope

    def entering(self, scope: str) -> "_Ctx":
        """The context inside `scope`: its own names, and no block instance still awaiting its scope."""
        return _Ctx(self.vars, self.defaults, (*self.scopes, scope), _Names(self.names), self.blocks)


class _Names:
    """A container's local names (`from:` targets), chained to the enclosing one."""

    def __init__(self, parent: Optional["_Names"] = None):
        self.parent, self.entries = parent, {}

    def lookup(self, name: str) -> Optional[str]:
        table: Optional[_Names] = self
        while table is not None:
            if name in table.entries:
                return table.entries[name]
            table = table.parent
        return None


@dataclass
class _Item:
    """An item in a spec, classified: its kind key, the value under it, and its meta keys."""

    kind: str  # an op name, a block name, or a container key
    value: Any
    meta: dict[str, Any]
    loc: Loc
    raw: Any


def expand(spec: Spec, **overrides: Any) -> Graph:
    """Expand `spec` with parameters `overrides` into a `Graph`."""
    return _Expander(spec, overrides).run()


class _Expander:
    def __init__(self, spec: Spec, overrides: dict[str, Any]):
        self.spec = spec
        self.params = self._bind_params(overrides)
        self.nodes: dict[str, Node] = {}
        self.scopes: dict[str, Scope] = {}
        self.taken: dict[str, Loc] = {}
        self.pending: dict[str, tuple[str, _Names, Loc]] = {}  # token -> (reference, names, loc)
        self.omitted: set[str] = set()
        self.from_locs: dict[str, Loc] = {}  # node -> the `from:` that feeds it, for cycle errors
        # Results that depend only on (immutable) spec subtrees, so that the 9th
        # instance of a block costs less than the 1st: key -> (the key's objects, result).
        # Holding the objects keeps their ids from being reused while the key stands.
        self.memo: dict[tuple, tuple[tuple, Any]] = {}
        self.kinds = set(OPS) | set(spec.blocks) | set(CONTAINER_KEYS)
        for defaults in (spec.defaults, *(b.defaults for b in spec.blocks.values())):
            for op in defaults:
                if op not in spec_ops():
                    raise SpecError(f"'defaults' names '{op}', which is not an op", defaults.key_loc(op),
                                    hint=did_you_mean(op, spec_ops()) or "defaults apply to ops such as conv or maxpool")

    # -- parameters -----------------------------------------------------

    def _bind_params(self, overrides: dict[str, Any]) -> dict[str, Any]:
        params = dict(self.spec.params)
        where = self.spec.loc("params") if "params" in self.spec.tree else self.spec.tree.loc
        for key, value in overrides.items():
            if key not in params:
                raise SpecError(f"unknown parameter '{shorten(key)}' in an override; this spec's parameters: "
                                f"{', '.join(params) or 'none'}", where, hint=did_you_mean(key, params))
            default = params[key]
            if default is not None and not expr.is_expression(default) and not _same_type(default, value):
                raise SpecError(f"parameter '{key}' has type {type(default).__name__} (default {shown(default)}), "
                                f"got {shown(value)}", self.spec.tree["params"].loc_of(key))
            params[key] = value
        self._check_param_use()
        bound: dict[str, Any] = {}
        for key, value in params.items():  # a default may be computed from earlier parameters
            loc = self.spec.tree["params"].loc_of(key)
            try:  # a plain YAML or --set number: refused here, by name, not at some later use
                expr.check_number(value, f"parameter '{key}'")
            except expr.ExprError as exc:
                raise SpecError(str(exc), loc, hint=exc.hint) from None
            if key not in overrides:
                value = self._eval(value, loc, _Ctx(bound, (), (), _Names()))
            bound[key] = value
        return bound

    def _check_param_use(self) -> None:
        spec = self.spec
        globals_ = set(spec.params)
        used: set[str] = set()
        for name, block in spec.blocks.items():
            local = set(block.params)
            block_used: set[str] = set()
            for text, loc, _ in _expressions(block.item, block.loc):
                block_used |= self._names(text, loc, local | globals_, f"block '{name}'")
            for text, loc, _ in _expressions(block.defaults, block.loc):
                block_used |= self._names(text, loc, local | globals_, f"block '{name}'")
            for p, default in block.param_defaults.items():
                if expr.is_expression(default):
                    block_used |= self._names(default, block.param_locs.get(p, block.loc), local | globals_,
                                              f"block '{name}'")
            for p in block.params:
                if p not in block_used:
                    raise SpecError(f"parameter '{p}' of block '{name}' is never used", block.param_locs.get(p, block.loc),
                                    hint="remove it, or use it as '$" + p + "'")
            used |= block_used - local
        for key in ("body", "input", "outputs", "defaults", "params"):
            if key in spec.tree:
                for text, loc, _ in _expressions(spec.tree[key], spec.tree.loc_of(key)):
                    used |= self._names(text, loc, globals_, "the spec")
        for p in spec.params:
            if p not in used:
                raise SpecError(f"parameter '{p}' is never used", spec.tree["params"].key_loc(p),
                                hint="remove it, or use it as '$" + p + "'")

    def _names(self, text: str, loc: Loc, known: set[str], where: str) -> set[str]:
        try:
            names = expr.names_in(text)
        except expr.ExprError as exc:
            raise SpecError(str(exc), loc, hint=exc.hint) from None
        for n in sorted(names):
            if n not in known:
                raise SpecError(f"unknown parameter '{n}' in {where}", loc,
                                hint=did_you_mean(n, known) or "declare it under 'params'")
        return names

    def _eval(self, value: Any, loc: Loc, ctx: _Ctx) -> Any:
        if not expr.is_expression(value):
            return value
        try:
            return expr.evaluate(value, ctx.vars)
        except expr.ExprError as exc:
            raise SpecError(str(exc), loc, hint=exc.hint or did_you_mean(exc.name or "", ctx.vars)) from None

    def _memoised(self, name: Hashable, objects: tuple, compute: Callable[[], Any]) -> Any:
        """`compute()`, once per `name` and identity of `objects` (a pure function of those only)."""
        key = (name, *map(id, objects))
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = (objects, compute())
        return hit[1]

    # -- the walk -------------------------------------------------------

    def run(self) -> Graph:
        spec = self.spec
        ctx = _Ctx(self.params, (spec.defaults,), (), _Names())
        input_shape = tuple(self._dim(v, spec.input.loc_of(i), ctx) for i, v in enumerate(spec.input))
        last = self._group(spec.body, spec.tree.loc_of("body"), "", INPUT, ctx, named=True)
        outputs = self._outputs(ctx.names, last)
        self._resolve_pending()
        dag = self._dag()
        self._mark_training_only(dag, outputs)
        return Graph(
            name=spec.name, title=spec.title, paper=spec.paper, path=spec.path, input_shape=input_shape,
            input_loc=spec.tree.loc_of("input"), params=self.params, nodes=self.nodes, scopes=self.scopes,
            outputs=outputs, dag=dag,
        )

    def _dim(self, value: Any, loc: Loc, ctx: _Ctx) -> int:
        value = self._eval(value, loc, ctx)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpecError(f"input sizes must be positive integers, got {shown(value)}", loc)
        return value

    def _group(self, raw: Any, loc: Loc, prefix: str, inp: str, ctx: _Ctx, named: Optional[bool] = None) -> str:
        """Expand a sequence (a list, or a mapping of names to items); returns its output node."""
        if isinstance(raw, Sequence):
            position = 0
            for i, entry in enumerate(raw):
                item = self._classify(entry, raw.loc_of(i))
                if not self._when(item, ctx):
                    continue
                count = self._repeat(item, ctx)
                for copy in range(count):
                    once = item if copy == 0 else replace(item, meta={k: v for k, v in item.meta.items() if k != "from"})
                    inp = self._dispatch(once, str(position), prefix, inp, ctx)
                    position += 1
            if position == 0:
                raise SpecError("an empty sequence", loc, hint="give it at least one layer")
            return inp
        if isinstance(raw, Mapping) and (named or not self._is_item(raw)):
            if not raw:
                raise SpecError("an empty sequence", loc, hint="give it at least one layer")
            for key, entry in raw.items():
                self._check_name(key, raw.key_loc(key))
                self._check_not_a_typo(key, entry, raw.key_loc(key), raw.loc_of(key))
                out = self._item(entry, raw.loc_of(key), key, prefix, inp, ctx)
                inp = inp if out is None else out
            return inp
        out = self._item(raw, loc, None, prefix, inp, ctx)
        return inp if out is None else out

    def _item(self, raw: Any, loc: Loc, name: Optional[str], prefix: str, inp: str, ctx: _Ctx) -> Optional[str]:
        """Expand one named item (handling `when` and a named `repeat`); None if `when` drops it."""
        item = self._classify(raw, loc)
        if not self._when(item, ctx):
            if name is not None:
                self.omitted.add(prefix + name)
                ctx.names.entries.pop(name, None)
            return None
        if "repeat" in item.meta:
            count = self._repeat(item, ctx)
            path = self._claim(prefix, name or "repeat", item.loc)
            sub = self._open_scope(path, "repeat", item.loc, ctx)
            inp = self._input(item, inp, ctx)
            child_prefix = path + "." if not _scopeless(name) else prefix
            for copy in range(count):
                meta = {k: v for k, v in item.meta.items() if k not in ("repeat", "from")}
                inp = self._dispatch(replace(item, meta=meta), str(copy), child_prefix, inp, sub)
            self._close_scope(path, inp, name, ctx)
            return inp
        return self._dispatch(item, name, prefix, inp, ctx)

    def _dispatch(self, item: _Item, name: Optional[str], prefix: str, inp: str, ctx: _Ctx) -> str:
        inp = self._input(item, inp, ctx)
        if item.kind in CONTAINER_KEYS:
            return self._container(item, name, prefix, inp, ctx)
        if item.kind in self.spec.blocks:
            return self._block(item, name, prefix, inp, ctx)
        return self._op(item, name, prefix, inp, ctx)

    # -- items ----------------------------------------------------------

    def _op(self, item: _Item, name: Optional[str], prefix: str, inp: str, ctx: _Ctx) -> str:
        op = OPS[item.kind]
        if op.internal:
            raise SpecError(f"'{item.kind}' is not an op a spec can use", item.loc)
        path = self._claim(prefix, name or item.kind, item.loc)
        block_root = ctx.block is not None
        if block_root:  # a block whose whole body is this op: the op is the block instance
            ctx = self._block_scope(path, "op", item.loc, ctx)
        args, exprs = self._op_args(op, item, path, ctx)
        self._add_node(Node(path, item.kind, args, [inp], item.loc, ctx.scopes, exprs=exprs))
        if block_root:
            self.scopes[path].output = path
        self._register(name, path, ctx)
        return path

    def _op_args(self, op: Any, item: _Item, path: str, ctx: _Ctx) -> tuple[Any, dict[tuple, str]]:
        """The validated arguments of op `item` (its own over the per-op defaults, expressions evaluated),
        and the expression text behind each argument that had one."""
        levels = tuple(level[item.kind] for level in ctx.defaults if item.kind in level)
        # The merged arguments' plain data, and where each expression sits, once per spec subtree.
        merged, plain, holes = self._memoised(
            "op args", (item.value if item.value is not None else item.loc, *levels),
            lambda: _with_holes(item, levels))
        values = [self._eval(text, loc, ctx) for text, loc, _ in holes]
        key = tuple((type(v), v) for v in values)  # typed: 1, 1.0 and True are equal keys, not equal arguments

        def validated() -> Any:
            data = _filled(plain, zip((where for _, _, where in holes), values))
            return validate(op.args, data, merged, f"{item.kind} '{path}'", item.loc)

        # Block instances with equal argument values share their (frozen) arguments;
        # a list-valued parameter makes the key unhashable, and is validated each time.
        args = self._memoised(("args", key), (op, merged), validated) if _hashable(key) else validated()
        return args, {where: text for text, _, where in holes}

    def _block(self, item: _Item, name: Optional[str], prefix: str, inp: str, ctx: _Ctx) -> str:
        block = self.spec.blocks[item.kind]
        if block.name in ctx.blocks:
            chain = " -> ".join((*ctx.blocks, block.name))
            raise SpecError(f"block '{block.name}' uses itself ({chain})", item.loc)
        bound = self._bind_block_args(block, item, ctx)
        sub = _Ctx({**self.params, **bound}, (self.spec.defaults, block.defaults), ctx.scopes, _Names(ctx.names),
                   (*ctx.blocks, block.name), (block.name, bound))
        out = self._item(block.item, block.loc, name or block.name, prefix, inp, sub)
        if out is None:  # the block's own `when:` is false
            return inp
        self._register(name, out, ctx)
        return out

    def _bind_block_args(self, block: Any, item: _Item, ctx: _Ctx) -> dict[str, Any]:
        value, loc = item.value, item.raw.loc_of(item.kind)
        signature = f"{block.name}({', '.join(block.params)})"
        if value is None:  # `a: blk` or `a: {blk: null}` for a block without parameters
            value = Sequence()
            value.loc, value.item_locs = loc, []
        if isinstance(value, Sequence):
            if len(value) > len(block.params) or len(value) < len([p for p in block.params if p not in block.param_defaults]):
                raise SpecError(f"block '{block.name}' takes {len(block.params)} argument(s) {signature}, "
                                f"got {len(value)}", loc)
            bound = {p: self._eval(v, value.loc_of(i), ctx) for i, (p, v) in enumerate(zip(block.params, value))}
        elif isinstance(value, Mapping):
            for key in value:
                if key not in block.params:
                    raise SpecError(f"block '{block.name}' has no parameter '{key}'; it takes {signature}",
                                    value.key_loc(key), hint=did_you_mean(key, block.params))
            bound = {k: self._eval(v, value.loc_of(k), ctx) for k, v in value.items()}
        else:
            raise SpecError(f"the arguments of block '{block.name}' must be a list or a mapping, e.g. "
                            f"{block.name}: [...] for {signature}", loc)
        for p in block.params:
            if p not in bound:
                if p not in block.param_defaults:
                    raise SpecError(f"block '{block.name}' needs argument '{p}'; it takes {signature}", loc)
                default = block.param_defaults[p]
                bound[p] = self._eval(default, block.param_locs.get(p, loc), replace(ctx, vars={**self.params, **bound}))
        return {p: bound[p] for p in block.params}  # the block's own order, whatever the call's

    def _container(self, item: _Item, name: Optional[str], prefix: str, inp: str, ctx: _Ctx) -> str:
        kind = item.kind
        path = self._claim(prefix, name or kind, item.loc)
        sub = self._open_scope(path, kind, item.loc, ctx)
        child_prefix = prefix if _scopeless(name) else path + "."
        options = {k: self._eval(v, item.raw.loc_of(k), ctx) for k, v in item.meta.items() if k in ("scale", "act")}
        if kind == "seq":
            if not isinstance(item.value, (Sequence, Mapping)):
                raise SpecError("'seq' takes a list of layers or a mapping of names to layers", item.raw.loc_of(kind))
            out = self._group(item.value, item.raw.loc_of(kind), child_prefix, inp, sub, named=True)
        elif kind in ("concat", "add"):
            branches = item.value
            if not isinstance(branches, Mapping) or not branches:
                raise SpecError(f"'{kind}' takes a mapping of branch names to layers, e.g. {{branch1: ..., branch2: ...}}",
                                item.raw.loc_of(kind))
            outs = []
            for key, branch in branches.items():
                self._check_name(key, branches.key_loc(key))
                if branch == "identity" or branch is None:
                    outs.append(inp)
                    continue
                out = self._item(branch, branches.loc_of(key), key, child_prefix, inp, sub)
                if out is not None:  # a branch whose `when:` is false is left out, not passed through
                    outs.append(out)
            if len(outs) < 2:
                what = "sums its branches" if kind == "add" else "joins its branches along the channels"
                raise SpecError(f"'{kind}' needs at least two branches: it {what}, and has {len(outs)} here",
                                item.raw.loc_of(kind),
                                hint="add a branch 'identity' for the input itself, e.g. {add: {body: ..., skip: "
                                "identity}}, or use 'residual:'; a single branch is just its layers"
                                if kind == "add" else "a single branch is just its layers: write them without "
                                "'concat:'")
            out = self._join(path, kind, outs, options, item, sub)
        else:  # residual: out = act(shortcut + scale * body)
            body_out = self._group(item.value, item.loc, child_prefix, inp, sub, named=None)
            shortcut = item.meta.get("shortcut")
            short_out = None if shortcut in (None, "identity") else self._item(
                shortcut, item.raw.loc_of("shortcut"), "shortcut", child_prefix, inp, sub)
            short_out = inp if short_out is None else short_out
            out = self._join(path, "residual_add", [short_out, body_out], options, item, sub)
        self._close_scope(path, out, name, ctx)
        return out

    def _join(self, path: str, op: str, inputs: list[str], options: dict[str, Any], item: _Item, ctx: _Ctx) -> str:
        node_id = f"{path}.{'concat' if op == 'concat' else 'add'}"
        if node_id in self.taken:
            raise SpecError(f"the name '{node_id}' is needed for the join of '{path}' but is already used",
                            self.taken[node_id])
        self.taken[node_id] = item.loc
        args = validate(JoinArgs, options, item.raw, f"{item.kind} '{path}'", item.loc)
        exprs = {(k,): v for k, v in item.meta.items() if k in ("scale", "act") and expr.is_expression(v)}
        self._add_node(Node(node_id, op, args, inputs, item.loc, ctx.scopes, exprs=exprs))
        return node_id

    # -- scopes, names, nodes ---------------------------------------------

    def _open_scope(self, path: str, kind: str, loc: Loc, ctx: _Ctx) -> _Ctx:
        if ctx.block is not None:
            return self._block_scope(path, kind, loc, ctx)
        parent = ctx.scopes[-1] if ctx.scopes else None
        self.scopes[path] = Scope(path, kind, None, loc, parent)
        return ctx.entering(path)

    def _block_scope(self, path: str, kind: str, loc: Loc, ctx: _Ctx) -> _Ctx:
        block, args = ctx.block  # type: ignore[misc]
        parent = ctx.scopes[-1] if ctx.scopes else None
        self.scopes[path] = Scope(path, kind, block, loc, parent, args=args)
        return ctx.entering(path)

    def _close_scope(self, path: str, out: str, name: Optional[str], ctx: _Ctx) -> None:
        self.scopes[path].output = out
        self._register(name, out, ctx)

    def _register(self, name: Optional[str], out: str, ctx: _Ctx) -> None:
        if name is not None:
            ctx.names.entries[name] = out

    def _claim(self, prefix: str, name: str, loc: Loc) -> str:
        path = prefix + name
        if path in self.taken:
            first = self.taken[path]
            raise SpecError(f"the name '{path}' is already used (line {first.line})", loc,
                            hint="give this layer another name")
        self.taken[path] = loc
        return path

    def _check_name(self, key: str, loc: Loc) -> None:
        if not NAME.match(key) and not key.isdigit():
            raise SpecError(f"'{key}' is not a valid layer name", loc,
                            hint="use letters, digits and underscores, not starting with a digit")
        if key in RESERVED_NAMES:
            raise SpecError(f"'{key}' is reserved for the model's input", loc, hint="choose another name")
        if is_module_attribute(key):
            raise SpecError(f"a layer cannot be called '{key}': every torch module already has an attribute "
                            "of that name", loc, hint=f"rename it, e.g. '{key.strip('_')}_'")

    def _check_not_a_typo(self, key: str, entry: Any, key_loc: Loc, loc: Loc) -> None:
        """Refuse a chain whose name is one typo away from a keyword (`concta:`, `residul:`, `ad:`).

        As written, such a name is legal: it names a plain chain, and archc
        would build another network than the one meant.  A layer named like
        an op (`conv: {conv: ...}`) is fine, and so is an explicit `NAME: {seq: ...}`.
        """
        if key in KEYWORDS or key in self.kinds or len(key) < 2:
            return
        if not (isinstance(entry, Sequence) or (isinstance(entry, Mapping) and "seq" not in entry
                                                 and self._classify(entry, loc).kind == "seq")):
            return
        for word in KEYWORDS:
            # Short keywords tolerate one slip, long ones two; `se` (squeeze-and-excitation) is a name, not `seq`.
            if edit_distance(key, word) <= (2 if len(word) >= 7 else 1) and not (word == "seq" and len(key) < 3):
                what = f"the '{word}' container" if word in CONTAINER_KEYS else f"the '{word}' key"
                raise SpecError(f"'{key}' looks like a misspelt '{word}'; as written it names a plain chain of "
                                "layers", key_loc, hint=f"write '{word}:' for {what}, or '{key}: {{seq: ...}}' "
                                "if a chain of that name is meant")

    def _add_node(self, node: Node) -> None:
        if len(self.nodes) >= MAX_NODES:
            raise SpecError(f"the network grows past {MAX_NODES:,} layers", node.loc, hint="check 'repeat' counts")
        self.nodes[node.id] = node
        for scope in node.scopes:
            self.scopes[scope].nodes.append(node.id)

    # -- meta keys --------------------------------------------------------

    def _when(self, item: _Item, ctx: _Ctx) -> bool:
        if "when" not in item.meta:
            return True
        value = self._eval(item.meta["when"], item.raw.loc_of("when"), ctx)
        if not isinstance(value, bool):
            raise SpecError(f"'when' must be true or false, got {shown(value)}", item.raw.loc_of("when"))
        return value

    def _repeat(self, item: _Item, ctx: _Ctx) -> int:
        if "repeat" not in item.meta:
            return 1
        loc = item.raw.loc_of("repeat")
        value = self._eval(item.meta["repeat"], loc, ctx)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise SpecError(f"'repeat' must be a whole number from 1 to 10000, got {shown(value)}", loc)
        return value

    def _input(self, item: _Item, inp: str, ctx: _Ctx) -> str:
        if "from" not in item.meta:
            return inp
        ref, loc = item.meta["from"], item.raw.loc_of("from")
        if not isinstance(ref, str) or not ref:
            raise SpecError("'from' takes the name of an earlier layer or block", loc)
        token = f"\0from{len(self.pending)}"
        self.pending[token] = (ref, ctx.names, loc)
        return token

    # -- classification -----------------------------------------------------

    def _is_item(self, raw: Any) -> bool:
        if isinstance(raw, str):
            return raw in self.kinds
        if isinstance(raw, Sequence):
            return True
        if not isinstance(raw, Mapping):
            return False
        kinds = self._kind_keys(raw)
        if len(kinds) == 1:
            allowed = set(META_KEYS) | set(CONTAINER_OPTIONS.get(kinds[0], ()))
            others = [k for k in raw if k != kinds[0]]
            return all(k in allowed or not isinstance(raw[k], (Mapping, Sequence)) for k in others)
        return False

    def _is_layer(self, value: Any) -> bool:
        """Whether `value` can stand where a layer does: an item, a list, or a mapping of named layers."""
        if self._is_item(value) or isinstance(value, Sequence):
            return True
        return isinstance(value, Mapping) and bool(value) and all(
            self._is_item(v) or isinstance(v, (Mapping, Sequence)) for v in value.values())

    def _kind_keys(self, raw: Mapping) -> list[str]:
        """The op, block or container keys of a mapping (a container's options, like `scale`, are not)."""
        kinds = [k for k in raw if k in self.kinds]
        if len(kinds) < 2:
            return kinds
        options = {o for k in kinds if k in CONTAINER_OPTIONS for o in CONTAINER_OPTIONS[k]}
        return [k for k in kinds if k not in options]

    def _classify(self, raw: Any, loc: Loc) -> _Item:
        return self._memoised("classify", (raw, loc), partial(self._classify_new, raw, loc))

    def _classify_new(self, raw: Any, loc: Loc) -> _Item:
        if isinstance(raw, str):
            if raw in self.kinds and raw not in CONTAINER_KEYS:
                return _Item(raw, None, {}, loc, _located({}, loc))
            raise self._unknown(raw, loc)
        if isinstance(raw, Sequence):
            return _Item("seq", raw, {}, loc, _located({"seq": raw}, loc))
        if not isinstance(raw, Mapping) or not raw:
            raise SpecError(f"expected a layer (e.g. {{conv: {{out: 64, k: 3}}}}), got {shown(raw)}", loc)
        kinds = self._kind_keys(raw)
        if len(kinds) >= 2 and not all(self._is_layer(raw[k]) for k in kinds):
            # `{rbf: {out: 3}, scale: 2}`: op arguments, not a chain of layers named like ops.
            raise SpecError(f"one item holds two ops, '{kinds[0]}' and '{kinds[1]}'", raw.key_loc(kinds[1]),
                            hint=f"give each op its own item: - {{{kinds[0]}: ...}} then - {{{kinds[1]}: ...}}")
        if self._is_item(raw):
            kind = kinds[0]
            allowed = set(META_KEYS) | set(CONTAINER_OPTIONS.get(kind, ()))
            for key in raw:
                if key != kind and key not in allowed:
                    raise SpecError(f"unknown key '{key}' beside '{kind}'", raw.key_loc(key),
                                    hint=did_you_mean(key, allowed) or f"allowed here: {', '.join(sorted(allowed))}")
            meta = {k: v for k, v in raw.items() if k != kind}
            return _Item(kind, raw[kind], meta, raw.key_loc(kind), raw)
        if not kinds and (len(raw) == 1 or any(k in META_KEYS for k in raw)):
            key = next(k for k in raw if k not in META_KEYS) if any(k not in META_KEYS for k in raw) else None
            if key is None:
                raise SpecError("this item has 'from'/'repeat'/'when' but no op or block", raw.loc)
            if isinstance(raw[key], Sequence) and not all(self._is_item(v) for v in raw[key]):
                raise self._unknown(key, raw.key_loc(key))
            if not self._is_item(raw[key]) and not (isinstance(raw[key], Mapping) and len(raw[key]) > 1
                                                    and all(self._is_item(v) for v in raw[key].values())):
                raise self._unknown(key, raw.key_loc(key))
        return _Item("seq", raw, {}, loc, _located({"seq": raw}, loc))

    def _unknown(self, word: str, loc: Loc) -> SpecError:
        return SpecError(f"unknown op or block '{word}'", loc,
                         hint=did_you_mean(word, self.kinds) or f"ops: {', '.join(spec_ops())}")

    # -- after the walk -----------------------------------------------------

    def _outputs(self, names: _Names, last: str) -> dict[str, Output]:
        raw = self.spec.outputs
        if raw is None:
            return {"output": Output("output", last, False, self.spec.tree.loc_of("body"))}
        if not isinstance(raw, Mapping) or not raw:
            raise SpecError("'outputs' must map output names to layer names", self.spec.loc("outputs"))
        outputs: dict[str, Output] = {}
        for key, value in raw.items():
            loc = raw.loc_of(key)
            self._check_name(key, raw.key_loc(key))
            spec = validate(OutputSpec, {"node": value} if isinstance(value, str) else _plain(value),
                            value if isinstance(value, Mapping) else raw, f"output '{key}'", loc)
            if spec.node in self.omitted:
                continue  # switched off by its `when:`
            token = f"\0from{len(self.pending)}"
            self.pending[token] = (spec.node, names, loc)
            outputs[key] = Output(key, token, spec.train_only, loc)
        if not outputs:
            raise SpecError("every output names a layer switched off by its 'when:'", self.spec.loc("outputs"))
        if not any(not o.train_only for o in outputs.values()):
            raise SpecError("every output is train_only; the model would return nothing in eval mode",
                            self.spec.loc("outputs"))
        return outputs

    def _lookup(self, ref: str, names: _Names, loc: Loc) -> str:
        if ref == INPUT:
            return INPUT
        found = names.lookup(ref)
        if found is None and ref in self.scopes:
            found = self.scopes[ref].output
        if found is None and ref in self.nodes:
            found = ref
        if found is None:
            if ref in self.omitted:
                raise SpecError(f"'{ref}' is switched off by its 'when:' here", loc)
            raise SpecError(f"'{ref}' names no layer or block", loc,
                            hint=did_you_mean(ref, [*self.nodes, *self.scopes, *names.entries]))
        return found

    def _resolve_pending(self) -> None:
        resolved: dict[str, str] = {}

        def resolve(token: str) -> str:
            if token in resolved:
                return resolved[token]
            ref, names, loc = self.pending[token]
            target = self._lookup(ref, names, loc)
            if target in self.pending:  # a `from:` pointing at another `from:` item's input
                target = resolve(target)
            resolved[token] = target
            return target

        for node in self.nodes.values():
            for i in node.inputs:
                if i in self.pending:
                    self.from_locs[node.id] = self.pending[i][2]
            node.inputs = [resolve(i) if i in self.pending else i for i in node.inputs]
        for scope in self.scopes.values():
            if scope.output in self.pending:
                scope.output = resolve(scope.output)

    def _dag(self) -> nx.DiGraph:
        dag = nx.DiGraph()
        dag.add_node(INPUT)
        for node in self.nodes.values():
            dag.add_node(node.id)
            for src in node.inputs:
                dag.add_edge(src, node.id)
        if declared_in_order(self.nodes):
            return dag  # every edge points forward: no cycle
        try:
            cycle = nx.find_cycle(dag)
        except nx.NetworkXNoCycle:
            return dag
        names = [edge[0] for edge in cycle] + [cycle[0][0]]
        where = next((self.from_locs[v] for _, v in cycle if v in self.from_locs), self.nodes[cycle[0][1]].loc)
        raise SpecError(f"the wiring has a cycle: {' -> '.join(names)}", where,
                        hint="'from:' must name a layer that does not depend on this one")

    def _mark_training_only(self, dag: nx.DiGraph, outputs: dict[str, Output]) -> None:
        for key, out in list(outputs.items()):
            if out.node in self.pending:  # declared under `outputs:` by name
                ref, names, loc = self.pending[out.node]
                outputs[key] = replace(out, node=self._lookup(ref, names, loc))
        needed_eval: set[str] = set()
        needed: set[str] = set()
        for out in outputs.values():
            reach = nx.ancestors(dag, out.node) | {out.node}
            needed |= reach
            if not out.train_only:
                needed_eval |= reach
        for node in self.nodes.values():
            if node.id not in needed:
                raise SpecError(f"the output of '{node.id}' is never used", node.loc,
                                hint="feed it into a later layer or name it under 'outputs'")
            node.train_only = node.id not in needed_eval


# -- helpers ----------------------------------------------------------------


def _scopeless(name: Optional[str]) -> bool:
    """Names starting with '_' add no level to module paths (their children join the parent's)."""
    return name is not None and name.startswith("_")


def _same_type(default: Any, value: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def _located(value: dict, loc: Loc) -> Mapping:
    out = Mapping(value)
    out.loc, out.key_locs, out.value_locs = loc, {k: loc for k in value}, {k: loc for k in value}
    return out


def _merge(base: Any, over: Any) -> Any:
    """`over` laid on `base`, mappings merged key by key (locations kept)."""
    if not (isinstance(base, Mapping) and isinstance(over, Mapping)):
        return over
    out = Mapping()
    out.loc = over.loc
    out.key_locs, out.value_locs = dict(base.key_locs), dict(base.value_locs)
    for key, value in base.items():
        out[key] = value
    for key, value in over.items():
        out[key] = _merge(base[key], value) if key in base else value
        out.key_locs[key], out.value_locs[key] = over.key_loc(key), over.loc_of(key)
    return out


def _plain(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _plain(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_plain(v) for v in tree]
    return tree


def _expressions(tree: Any, loc: Loc, path: tuple = ()) -> Iterator[tuple[str, Loc, tuple]]:
    """Every `$...` string below `tree`: its text, its location and its path of keys and indices."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _expressions(value, loc_of(tree, key, loc), (*path, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _expressions(value, loc_of(tree, i, loc), (*path, i))
    elif expr.is_expression(tree):
        yield tree, loc, path


def _with_holes(item: _Item, levels: tuple[Mapping, ...]) -> tuple[Mapping, Any, list[tuple[str, Loc, tuple]]]:
    """An op item's arguments laid over its defaults (outermost first); their plain data; their expressions."""
    merged = item.value if item.value is not None else _located({}, item.loc)
    if not isinstance(merged, Mapping):
        raise SpecError(f"the arguments of '{item.kind}' must be a mapping, e.g. {{k: 3}}", item.raw.loc_of(item.kind))
    for level in reversed(levels):
        merged = _merge(level, merged)
    return merged, _plain(merged), list(_expressions(merged, item.loc))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _filled(plain: Any, values: Iterable[tuple[tuple, Any]]) -> Any:
    """A copy of plain data `plain` with the value at each path replaced."""
    out = _plain(plain)
    for path, value in values:
        target = out
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return out
