"""`Spec` -> `Expanded`: blocks instantiated, parameters bound, wiring resolved.

In: a `Spec` and parameter overrides.  Out: an `Expanded` graph: frozen
`Layer`s named by their full dotted paths, the tree of scopes (block
instances and named containers), and the outputs.  It never looks at tensor
shapes.  `expand` runs these passes, one module each:

1. `params.bind_params`: Spec + overrides -> the parameters' values
   (overrides checked, every parameter used, defaults evaluated in order).
2. `items.Parser`: located YAML -> typed items (`OpUse`, `BlockUse`,
   `ContainerUse`, with their meta keys and locations), one per subtree.
3. `_Walk` (here): typed items -> `wiring.Unwired` layers and `Scope`s.  It
   instantiates blocks (binding their arguments), expands `repeat`, drops
   items whose `when:` is false, applies per-op `defaults`, evaluates
   `$param` expressions and validates each op's arguments with its pydantic
   model.  A `from:` becomes a `wiring.Ref` (a list `from: [a, b]`, one per
   input, in order), looked up only once every name exists.  A block
   instance is walked once per distinct key (the block, its argument values,
   the blocks around it, and its input shape where it reads `$in`); an equal
   instance after it copies what the first made under its own path, through
   the same name and size checks (`_Walk._instance`).
4. `wiring.wire`: Unwired layers -> `Layer`s: references resolved, the DAG
   and its cycle check, train-only marking, the unused-output check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable, Optional

from . import expr
from .errors import Loc, SpecError, did_you_mean, shown
from .graph import INPUT, Expanded, Scope, frozen
from .items import BlockUse, ContainerUse, Item, OpUse, Parser, check_name, located
from .ops import OPS, JoinArgs, OpDef, Shape, join_op, spec_ops
from .params import bind_params, evaluate, expressions
from .shapes import infer_node
from .source import Mapping, Sequence
from .spec import ADD, BRANCHING_CONTAINERS, IN, IN_SHAPE, INDEX, PASS_THROUGH, RESIDUAL, OutputSpec, Spec, validate
from .wiring import Names, PendingOutput, Ref, Resolver, Source, Unwired, wire

MAX_NODES = 100_000  # no real CNN comes near; stops a runaway `repeat`

Inputs = tuple[Source, ...]  # what an item receives: its predecessor, or what its `from:` names

# Copy equal block instances from the first one's record instead of walking each (tests turn it off to compare).
MEMOISE_INSTANCES = True

# What the walk logs while it records a block instance: a path claimed, a join's name claimed, a scope
# opened, a scope's output set, a layer added, a name switched off.
_CLAIM, _JOIN, _SCOPE, _OUTPUT, _LAYER, _OMIT = range(6)
_UNSEEN = object()
_INSTANCE_INPUT = object()  # in a record: what the instance receives
_OUTER = object()  # in a record: the scope around the instance
_BOUND = object()  # in a record: the instance's bound arguments
_KEY_TYPES = (bool, int, str, type(None))  # argument values an instance key holds as they are (and floats)


@dataclass(frozen=True)
class _Ctx:
    vars: dict[str, Any]  # parameters visible here
    defaults: tuple[Mapping, ...]  # per-op defaults, outermost first
    scopes: tuple[str, ...]  # enclosing scope ids
    names: Names  # where `from:` looks names up
    blocks: tuple[str, ...] = ()  # block instantiation stack, for recursion errors
    block: Optional[tuple[str, dict[str, Any]]] = None  # block instance awaiting its root scope
    inp: Inputs = ()  # what the item being expanded receives: `$in` and `$in_shape` are its first input's

    def entering(self, scope: str) -> "_Ctx":
        """The context inside `scope`: its own names, and no block instance still awaiting its scope."""
        return frozen(_Ctx, {**self.__dict__, "scopes": (*self.scopes, scope), "names": Names(self.names),
                             "block": None})

    def seeing(self, variables: dict[str, Any]) -> "_Ctx":
        """The same context with the parameters `variables` (as `dataclasses.replace` would make it)."""
        return frozen(_Ctx, {**self.__dict__, "vars": variables})

    def receiving(self, inputs: Inputs) -> "_Ctx":
        # Called for every item: built directly, as `dataclasses.replace` costs three times more.
        if inputs == self.inp:
            return self
        return frozen(_Ctx, {**self.__dict__, "inp": inputs})


def expand(spec: Spec, input_shape: Optional[tuple[int, ...]] = None, **overrides: Any) -> Expanded:
    """Expand `spec` with parameters `overrides` into an `Expanded` graph.

    `input_shape` (C, H, W) replaces the spec's `input`; `$in` and `$in_shape` follow it.
    """
    params = bind_params(spec, overrides)
    walk = _Walk(spec, params, input_shape)
    input_shape, last, outputs = walk.run()
    wired = wire(walk.layers, walk.scopes, walk.scope_outputs, outputs, walk.omitted)
    graph = Expanded(
        name=spec.name, title=spec.title, paper=spec.paper, path=spec.path, input_shape=input_shape,
        input_loc=spec.tree.loc_of("input"), params=params, nodes=wired.nodes, scopes=wired.scopes,
        outputs=wired.outputs,
    )
    if wired.in_order:  # `Graph.topological` without checking the order again
        graph.__dict__["topological"] = tuple(wired.nodes)
    return graph


class _Walk:
    """Typed items -> unwired layers and scopes: blocks instantiated, repeats and `when:` applied."""

    def __init__(self, spec: Spec, params: dict[str, Any], input_shape: Optional[tuple[int, ...]] = None):
        self.spec, self.params, self.input_override = spec, params, input_shape
        op_names = spec_ops()
        self.parser = Parser(OPS, spec.blocks, op_names)
        self.join_ops: dict[str, OpDef] = {}  # container -> its join op, looked up in the registry once per walk
        self.layers: dict[str, Unwired] = {}
        self.scopes: dict[str, Scope] = {}
        self.scope_outputs: dict[str, Source] = {}  # scope -> its output, maybe still a reference
        self.taken: dict[str, Loc] = {}
        self.omitted: set[str] = set()
        # `$in` needs the shapes of the layers made so far: inferred when asked, by the ops' rules.
        self.shapes: dict[str, Shape] = {}
        self.resolver = Resolver(self.layers, self.scope_outputs, self.omitted)
        # Results that depend only on (immutable) spec subtrees, so that the 9th
        # instance of a block costs less than the 1st: key -> (the key's objects, result).
        # Holding the objects keeps their ids from being reused while the key stands.
        self.memo: dict[tuple, tuple[tuple, Any]] = {}
        # Block instances: key -> the first one's `_Walked` (its `_Record` once a copy needs it), None (walked
        # each time), or a dict of those by input shape.
        self.instances: dict[Hashable, Any] = {}
        self.log: list[tuple] = []  # what the walk makes while `recording` (> 0) instances are being recorded
        self.recording = 0
        self.refs_made = self.in_reads = 0  # `from:` references made and `$in` reads, while recording
        for defaults in (spec.defaults, *(b.defaults for b in spec.blocks.values())):
            for op in defaults:
                if op not in op_names:
                    raise SpecError(f"'defaults' names '{op}', which is not an op", defaults.key_loc(op),
                                    hint=did_you_mean(op, op_names)
                                    or "defaults apply to ops such as conv or maxpool")

    def _eval(self, value: Any, loc: Loc, ctx: _Ctx) -> Any:
        if expr.is_expression(value) and ctx.inp:
            try:
                wanted = expr.names_in(value)
            except expr.ExprError:
                wanted = frozenset()  # `evaluate` reports it, located
            if IN in wanted or IN_SHAPE in wanted:
                if self.recording:
                    self.in_reads += 1
                shape = self._shape(ctx.inp[0], loc)
                return evaluate(value, loc, {**ctx.vars, IN: shape[0], IN_SHAPE: shape})
        return evaluate(value, loc, ctx.vars)

    def _shape(self, source: Source, loc: Loc) -> Shape:
        """The shape of `source`, a layer made so far (or the input), for `$in`: inferred as `shapes` would."""
        target = self._resolved(source, loc)
        stack, on_path = [(target, False)], set()  # depth first, without recursion: chains are long
        while stack:
            node_id, inputs_done = stack.pop()
            if node_id in self.shapes:
                continue
            layer = self.layers[node_id]
            inputs = [self._resolved(i, loc) for i in layer.inputs]
            if inputs_done:
                self.shapes[node_id] = infer_node(layer, inputs, [self.shapes[i] for i in inputs])
                continue
            if node_id in on_path:  # only a `from:` naming a later layer can come back here
                raise SpecError("'$in' needs the shape of a layer that depends on this one", loc)
            on_path.add(node_id)
            stack.append((node_id, True))
            stack.extend((i, False) for i in inputs if i not in self.shapes)
        return self.shapes[self._resolved(source, loc)]

    def _resolved(self, source: Source, loc: Loc) -> str:
        node_id = self.resolver.resolve(source)
        if node_id != INPUT and node_id not in self.layers:  # a scope still open: its output is not made yet
            raise SpecError("'$in' is used where the input is not made yet (inside the block or container "
                            "it comes from)", loc)
        return node_id

    def _memoised(self, name: Hashable, objects: tuple, compute: Callable[[], Any]) -> Any:
        """`compute()`, once per `name` and identity of `objects` (a pure function of those only)."""
        key = (name, *map(id, objects))
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = (objects, compute())
        return hit[1]

    # -- the walk -------------------------------------------------------

    def run(self) -> tuple[tuple[int, ...], Source, list[PendingOutput]]:
        spec = self.spec
        ctx = _Ctx(self.params, (spec.defaults,), (), Names())
        input_shape = tuple(self._dim(v, spec.input.loc_of(i), ctx) for i, v in enumerate(spec.input))
        if self.input_override is not None:
            input_shape = tuple(self.input_override)
        self.shapes[INPUT] = input_shape
        last = self._group(spec.body, spec.tree.loc_of("body"), "", INPUT, ctx, named=True)
        return input_shape, last, self._outputs(ctx.names, last)

    def _dim(self, value: Any, loc: Loc, ctx: _Ctx) -> int:
        value = self._eval(value, loc, ctx)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SpecError(f"input sizes must be positive integers, got {shown(value)}", loc)
        return value

    def _group(self, raw: Any, loc: Loc, prefix: str, inp: Source, ctx: _Ctx, named: Optional[bool] = None) -> Source:
        """Expand a sequence (a list, or a mapping of names to items); returns its output."""
        if isinstance(raw, Sequence):
            position = 0
            for i, entry in enumerate(raw):
                item = self.parser.item(entry, raw.loc_of(i))
                here = ctx.receiving(self._inputs(item, (inp,), ctx))
                if self._switched_off(item, here):
                    continue
                count = self._repeat(item, here)
                later = item.without("from") if count > 1 else item  # the copies after the first
                for copy in range(count):
                    once = item if copy == 0 else later
                    copy_ctx = self._copy(item, copy, ctx)
                    name = self._copy_name(item, copy, copy_ctx) if "names" in item.meta else str(position)
                    inp = self._dispatch(once, name, prefix, (inp,), copy_ctx)
                    position += 1
            if position == 0:
                raise SpecError("an empty sequence", loc, hint="give it at least one layer")
            return inp
        if isinstance(raw, Mapping) and (named or not self.parser.is_item(raw)):
            if not raw:
                raise SpecError("an empty sequence", loc, hint="give it at least one layer")
            for key, entry in raw.items():
                check_name(key, raw.key_loc(key))
                self.parser.check_not_a_typo(key, entry, raw.key_loc(key), raw.loc_of(key))
                out = self._item(entry, raw.loc_of(key), key, prefix, inp, ctx)
                inp = inp if out is None else out
            return inp
        out = self._item(raw, loc, None, prefix, inp, ctx)
        return inp if out is None else out

    def _item(self, raw: Any, loc: Loc, name: Optional[str], prefix: str, inp: Source, ctx: _Ctx) -> Optional[Source]:
        """Expand one named item (handling `when` and a named `repeat`); None if `when` drops it."""
        item = self.parser.item(raw, loc)
        if self._switched_off(item, ctx.receiving(self._inputs(item, (inp,), ctx))):
            if name is not None:
                self._omit(prefix + name)
                ctx.names.entries.pop(name, None)
            return None
        if "repeat" in item.meta:
            ins = self._inputs(item, (inp,), ctx)
            count = self._repeat(item, ctx.receiving(ins))
            path = self._claim(prefix, name or "repeat", item.loc)
            sub = self._open_scope(path, "repeat", item.loc, ctx)
            child_prefix = path + "." if not _scopeless(name) else prefix
            once = item.without("repeat", "from")
            for copy in range(count):
                copy_ctx = self._copy(item, copy, sub)
                copy_name = self._copy_name(item, copy, copy_ctx) if "names" in item.meta else str(copy)
                ins = (self._dispatch(once, copy_name, child_prefix, ins, copy_ctx),)
            self._close_scope(path, ins[0], name, ctx)
            return ins[0]
        if "names" in item.meta:
            raise SpecError("'names' names the copies of a 'repeat', and this item has none", item.meta_loc("names"),
                            hint="add 'repeat: N', or remove 'names'")
        return self._dispatch(item, name, prefix, (inp,), ctx)

    def _dispatch(self, item: Item, name: Optional[str], prefix: str, ins: Inputs, ctx: _Ctx) -> Source:
        ins = self._inputs(item, ins, ctx)
        ctx = ctx.receiving(ins)
        if isinstance(item, ContainerUse):
            return self._container(item, name, prefix, ins[0], ctx)
        if isinstance(item, BlockUse):
            return self._block(item, name, prefix, ins[0], ctx)
        return self._op(item, name, prefix, ins, ctx)

    # -- items ----------------------------------------------------------

    def _op(self, item: Item, name: Optional[str], prefix: str, ins: Inputs, ctx: _Ctx) -> str:
        op = OPS[item.kind]
        if op.internal:
            raise SpecError(f"'{item.kind}' is not an op a spec can use", item.loc)
        path = self._claim(prefix, name or item.kind, item.loc)
        block_root = ctx.block is not None
        if block_root:  # a block whose whole body is this op: the op is the block instance
            ctx = self._block_scope(path, "op", item.loc, ctx)
        args, exprs = self._op_args(op, item, path, ctx)
        inputs_loc = item.meta_loc("from") if "from" in item.meta else None
        self._add_layer(frozen(Unwired, {"id": path, "op": item.kind, "args": args, "inputs": ins, "loc": item.loc,
                                         "scopes": ctx.scopes, "exprs": exprs, "inputs_loc": inputs_loc}))
        if block_root:
            self._set_output(path, path)
        self._register(name, path, ctx)
        return path

    def _op_args(self, op: Any, item: Item, path: str, ctx: _Ctx) -> tuple[Any, dict[tuple, str]]:
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
            # Without expressions the plain data is what pydantic reads (it does not change its input).
            data = _filled(plain, zip((where for _, _, where in holes), values)) if holes else plain
            # Layers written out one by one with equal arguments share them too: validation is a function of
            # the data alone (a failure raises, located at this item, and is never kept).
            content = _content(data)
            if content is None:
                return validate(op.args, data, merged, f"{item.kind} '{path}'", item.loc)
            return self._memoised(("args of", content), (op,),
                                  lambda: validate(op.args, data, merged, f"{item.kind} '{path}'", item.loc))

        # Block instances with equal argument values share their (frozen) arguments;
        # a list-valued parameter makes the key unhashable, and is validated each time.
        args = self._memoised(("args", key), (op, merged), validated) if _hashable(key) else validated()
        return args, {where: text for text, _, where in holes}

    def _block(self, item: Item, name: Optional[str], prefix: str, inp: Source, ctx: _Ctx) -> Source:
        block = self.spec.blocks[item.kind]
        if block.name in ctx.blocks:
            chain = " -> ".join((*ctx.blocks, block.name))
            raise SpecError(f"block '{block.name}' uses itself ({chain})", item.loc)
        bound = self._bind_block_args(block, item, ctx)
        sub = frozen(_Ctx, {"vars": {**self.params, **bound}, "defaults": (self.spec.defaults, block.defaults),
                            "scopes": ctx.scopes, "names": Names(ctx.names), "blocks": (*ctx.blocks, block.name),
                            "block": (block.name, bound), "inp": ctx.inp})
        root = name or block.name
        key = _instance_key(block.name, bound, ctx.blocks, _scopeless(root)) if MEMOISE_INSTANCES else None
        if key is None:
            out = self._item(block.item, block.loc, root, prefix, inp, sub)
        else:
            out = self._instance(key, lambda: self._item(block.item, block.loc, root, prefix, inp, sub),
                                 prefix + root, inp, sub)
        if out is None:  # the block's own `when:` is false
            return inp
        self._register(name, out, ctx)
        return out

    # -- equal block instances, expanded once -------------------------------

    def _instance(self, key: Hashable, walk: Callable[[], Optional[Source]], root: str, inp: Source,
                  ctx: _Ctx) -> Optional[Source]:
        """A block instance rooted at `root`: `walk()` the first time its `key` is met (recording what it
        makes), and for each later instance with an equal key, that record copied under `root`.

        The key holds all that the walk of the block's body reads from outside, but for three things:
        the names `from:` looks up (an instance that makes a reference is walked every time), the shape of
        its input (where `$in` was read, records are kept per input shape) and the paths it claims (a copy
        claims them again, so a clash is refused at the same name as in the walk, as is MAX_NODES).
        """
        entry = self.instances.get(key, _UNSEEN)
        if entry is _UNSEEN:
            out, walked = self._recorded(walk, root, inp, ctx)
            if walked is None or not walked.reads_in:
                self.instances[key] = walked
            else:  # what it makes depends on the shape of its input
                shape = self._known_shape(inp)
                self.instances[key] = {} if shape is None else {shape: walked}
            return out
        if entry is None:  # not copyable: walked each time
            return walk()
        if isinstance(entry, dict):  # records by input shape
            if self.recording:  # an instance recorded around this one depends on this input's shape too
                self.in_reads += 1
            shape = self._known_shape(inp)
            if shape is None:
                return walk()
            record = entry.get(shape, _UNSEEN)
            if record is _UNSEEN:
                out, entry[shape] = self._recorded(walk, root, inp, ctx)
                return out
            table, slot = entry, shape
        else:
            record, table, slot = entry, self.instances, key
        if isinstance(record, _Walked):  # the first copy: the record is made from the log now
            record = table[slot] = self._relative(record)
        return walk() if record is None else self._replay(record, root, inp, ctx)

    def _recorded(self, walk: Callable[[], Optional[Source]], root: str, inp: Source,
                  ctx: _Ctx) -> tuple[Optional[Source], Optional["_Walked"]]:
        """`walk()`'s result, and where the log holds what it made (None: it made a reference, so it is not
        copied)."""
        start, refs, in_reads = len(self.log), self.refs_made, self.in_reads
        self.recording += 1
        try:
            out = walk()
        finally:
            self.recording -= 1
        if self.refs_made != refs:
            return out, None
        return out, _Walked(start, len(self.log), root, inp, ctx.scopes, ctx.block[1] if ctx.block else None, out,
                            self.in_reads != in_reads)

    def _relative(self, walked: "_Walked") -> Optional["_Record"]:
        """The record of what `walked` made (its slice of the log); None unless all of it lies under its root and
        it read nothing from outside but its input."""
        return _relative(self.log[walked.start:walked.end], walked.root, walked.inp, walked.outer, walked.bound,
                         walked.out)

    def _replay(self, record: "_Record", root: str, inp: Source, ctx: _Ctx) -> Optional[Source]:
        """Make again, under `root` and from `inp`, what `record` says an equal instance made, in the same order
        and through the same checks (names claimed, the layer bound)."""
        outer = ctx.scopes
        parent = outer[-1] if outer else None
        bound = ctx.block[1] if ctx.block else None
        scopes: dict[tuple, tuple[str, ...]] = {}  # inner scopes' suffixes -> the new layers' scopes
        add_layer, take = self._add_layer, self._take
        for event in record.events:
            kind = event[0]
            if kind == _LAYER:
                _, suffix, layer, inputs, inner = event
                layer_scopes = scopes.get(inner)
                if layer_scopes is None:
                    layer_scopes = scopes[inner] = outer + tuple([root + s for s in inner])
                # The recorded layer's args and exprs are shared: no stage changes them.
                add_layer(frozen(Unwired, {
                    "id": root + suffix, "op": layer.op, "args": layer.args,
                    "inputs": tuple([inp if s is _INSTANCE_INPUT else root + s for s in inputs]), "loc": layer.loc,
                    "scopes": layer_scopes, "exprs": layer.exprs, "inputs_loc": layer.inputs_loc}))
            elif kind == _CLAIM:
                take(root + event[1], event[2])
            elif kind == _SCOPE:
                _, suffix, scope_kind, block, loc, scope_parent, args = event
                self._add_scope(Scope(root + suffix, scope_kind, block, loc,
                                      parent if scope_parent is _OUTER else root + scope_parent,
                                      args=bound if args is _BOUND else dict(args)))
            elif kind == _OUTPUT:
                self._set_output(root + event[1], inp if event[2] is _INSTANCE_INPUT else root + event[2])
            elif kind == _JOIN:
                self._take_join(root + event[1], root + event[2], event[3])
            else:
                self._omit(root + event[1])
        out = record.out
        return out if out is None else inp if out is _INSTANCE_INPUT else root + out

    def _known_shape(self, source: Source) -> Optional[Shape]:
        """The shape of `source` if it follows from layers made so far without a reference to look up and
        without a shape error, else None.  Only caches shapes that `_shape` would compute alike."""
        if not isinstance(source, str):
            return None
        stack, on_path = [(source, False)], set()
        while stack:
            node_id, inputs_done = stack.pop()
            if node_id in self.shapes:
                continue
            layer = self.layers.get(node_id)
            if layer is None:
                return None
            if inputs_done:
                try:
                    self.shapes[node_id] = infer_node(layer, layer.inputs, [self.shapes[i] for i in layer.inputs])
                except SpecError:  # the walk reports it where it would
                    return None
                continue
            if node_id in on_path or not all(isinstance(i, str) for i in layer.inputs):
                return None
            on_path.add(node_id)
            stack.append((node_id, True))
            stack.extend((i, False) for i in layer.inputs if i not in self.shapes)
        return self.shapes[source]

    def _bind_block_args(self, block: Any, item: Item, ctx: _Ctx) -> dict[str, Any]:
        value, loc = item.value, item.meta_loc(item.kind)
        signature = f"{block.name}({', '.join(block.params)})"
        if value is None:  # `a: blk` or `a: {blk: null}` for a block without parameters
            value = Sequence()
            value.loc, value.item_locs = loc, []
        if isinstance(value, Sequence):
            required = [p for p in block.params if p not in block.param_defaults]
            if len(value) > len(block.params) or len(value) < len(required):
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
                bound[p] = self._eval(default, block.param_locs.get(p, loc), ctx.seeing({**self.params, **bound}))
        return {p: bound[p] for p in block.params}  # the block's own order, whatever the call's

    def _container(self, item: Item, name: Optional[str], prefix: str, inp: Source, ctx: _Ctx) -> Source:
        kind = item.kind
        path = self._claim(prefix, name or kind, item.loc)
        sub = self._open_scope(path, kind, item.loc, ctx)
        child_prefix = prefix if _scopeless(name) else path + "."
        options = {k: self._eval(v, item.meta_loc(k), ctx) for k, v in item.meta.items() if k in JoinArgs.model_fields}
        if kind == "seq":
            if not isinstance(item.value, (Sequence, Mapping)):
                raise SpecError("'seq' takes a list of layers or a mapping of names to layers", item.meta_loc(kind))
            out = self._group(item.value, item.meta_loc(kind), child_prefix, inp, sub, named=True)
        elif kind in BRANCHING_CONTAINERS:
            branches = item.value
            if not isinstance(branches, Mapping) or not branches:
                raise SpecError(f"'{kind}' takes a mapping of branch names to layers, e.g. "
                                "{branch1: ..., branch2: ...}",
                                item.meta_loc(kind))
            outs: list[Source] = []
            for key, branch in branches.items():
                check_name(key, branches.key_loc(key))
                if branch == PASS_THROUGH or branch is None:
                    outs.append(inp)
                    continue
                branch_out = self._item(branch, branches.loc_of(key), key, child_prefix, inp, sub)
                if branch_out is not None:  # a branch whose `when:` is false is left out, not passed through
                    outs.append(branch_out)
            if len(outs) < 2:
                what = "sums its branches" if kind == ADD else "joins its branches along the channels"
                raise SpecError(f"'{kind}' needs at least two branches: it {what}, and has {len(outs)} here",
                                item.meta_loc(kind),
                                hint="add a branch 'identity' for the input itself, e.g. {add: {body: ..., skip: "
                                "identity}}, or use 'residual:'; a single branch is just its layers"
                                if kind == ADD else "a single branch is just its layers: write them without "
                                "'concat:'")
            out = self._join(path, self._join_op(kind), outs, options, item, sub)
        else:  # residual: out = act(shortcut + scale * body)
            body_out = self._group(item.value, item.loc, child_prefix, inp, sub, named=None)
            if not self._when(item, ctx):  # switched off: the body alone
                self._close_scope(path, body_out, name, ctx)
                return body_out
            shortcut = item.meta.get("shortcut")
            short_out = None if shortcut in (None, PASS_THROUGH) else self._item(
                shortcut, item.meta_loc("shortcut"), "shortcut", child_prefix, inp, sub)
            short_out = inp if short_out is None else short_out
            out = self._join(path, self._join_op(kind), [short_out, body_out], options, item, sub)
        self._close_scope(path, out, name, ctx)
        return out

    def _join_op(self, container: str) -> OpDef:
        op = self.join_ops.get(container)
        if op is None:
            op = self.join_ops[container] = join_op(container)
        return op

    def _join(self, path: str, op: OpDef, inputs: list[Source], options: dict[str, Any], item: Item, ctx: _Ctx) -> str:
        node_id = f"{path}.{op.join_name}"
        self._take_join(node_id, path, item.loc)
        content = _content(options)  # equal options share their (frozen) validated arguments, as an op's do
        args = (validate(JoinArgs, options, item.raw, f"{item.kind} '{path}'", item.loc) if content is None
                else self._memoised(("join args", content), (), lambda: validate(
                    JoinArgs, options, item.raw, f"{item.kind} '{path}'", item.loc)))
        exprs = {(k,): v for k, v in item.meta.items() if k in JoinArgs.model_fields and expr.is_expression(v)}
        self._add_layer(Unwired(node_id, op.name, args, tuple(inputs), item.loc, ctx.scopes, exprs=exprs))
        return node_id

    # -- scopes, names, layers ---------------------------------------------

    def _open_scope(self, path: str, kind: str, loc: Loc, ctx: _Ctx) -> _Ctx:
        if ctx.block is not None:
            return self._block_scope(path, kind, loc, ctx)
        self._add_scope(Scope(path, kind, None, loc, ctx.scopes[-1] if ctx.scopes else None))
        return ctx.entering(path)

    def _block_scope(self, path: str, kind: str, loc: Loc, ctx: _Ctx) -> _Ctx:
        block, args = ctx.block  # type: ignore[misc]
        self._add_scope(Scope(path, kind, block, loc, ctx.scopes[-1] if ctx.scopes else None, args=args))
        return ctx.entering(path)

    def _add_scope(self, scope: Scope) -> None:
        self.scopes[scope.id] = scope
        self.scope_outputs[scope.id] = ""  # until the scope closes
        if self.recording:
            self.log.append((_SCOPE, scope))

    def _close_scope(self, path: str, out: Source, name: Optional[str], ctx: _Ctx) -> None:
        self._set_output(path, out)
        self._register(name, out, ctx)

    def _set_output(self, path: str, out: Source) -> None:
        self.scope_outputs[path] = out
        if self.recording:
            self.log.append((_OUTPUT, path, out))

    def _register(self, name: Optional[str], out: Source, ctx: _Ctx) -> None:
        if name is not None:
            ctx.names.entries[name] = out

    def _claim(self, prefix: str, name: str, loc: Loc) -> str:
        return self._take(prefix + name, loc)

    def _take(self, path: str, loc: Loc) -> str:
        if path in self.taken:
            first = self.taken[path]
            raise SpecError(f"the name '{path}' is already used (line {first.line})", loc,
                            hint="give this layer another name")
        self.taken[path] = loc
        if self.recording:
            self.log.append((_CLAIM, path, loc))
        return path

    def _take_join(self, node_id: str, path: str, loc: Loc) -> None:
        if node_id in self.taken:
            raise SpecError(f"the name '{node_id}' is needed for the join of '{path}' but is already used",
                            self.taken[node_id])
        self.taken[node_id] = loc
        if self.recording:
            self.log.append((_JOIN, node_id, path, loc))

    def _omit(self, path: str) -> None:
        self.omitted.add(path)
        if self.recording:
            self.log.append((_OMIT, path))

    def _add_layer(self, layer: Unwired) -> None:
        if len(self.layers) >= MAX_NODES:
            raise SpecError(f"the network grows past {MAX_NODES:,} layers", layer.loc, hint="check 'repeat' counts")
        self.layers[layer.id] = layer
        for scope in layer.scopes:
            self.scopes[scope].nodes.append(layer.id)
        if self.recording:
            self.log.append((_LAYER, layer))

    # -- meta keys --------------------------------------------------------

    def _switched_off(self, item: Item, ctx: _Ctx) -> bool:
        """Whether `when:` drops `item`: a residual whose `when:` is false stays, as its body alone."""
        return not (isinstance(item, ContainerUse) and item.kind == RESIDUAL) and not self._when(item, ctx)

    def _copy(self, item: Item, copy: int, ctx: _Ctx) -> _Ctx:
        """The context of a repeat's copy number `copy` (from 0): `$i` is its index."""
        if "repeat" not in item.meta:
            return ctx
        return ctx.seeing({**ctx.vars, INDEX: copy})

    def _copy_name(self, item: Item, copy: int, ctx: _Ctx) -> str:
        """A repeat copy's name from the `names:` pattern: each `{...}` holds an expression over `i` and the
        parameters (`denselayer{i + 1}`, `block1-{i}`)."""
        pattern, loc = item.meta["names"], item.meta_loc("names")
        if not isinstance(pattern, str) or not pattern:
            raise SpecError(f"'names' takes a pattern such as 'layer{{i + 1}}', got {shown(pattern)}", loc)

        def value(match: "re.Match[str]") -> str:
            result = evaluate("${" + match.group(1) + "}", loc, ctx.vars)
            if isinstance(result, bool) or not isinstance(result, (int, str)):
                raise SpecError(f"'{{{match.group(1)}}}' in 'names' gives {shown(result)}; a name needs a whole "
                                "number or text", loc)
            return str(result)

        name = re.sub(r"\{([^{}]*)\}", value, pattern)
        check_name(name, loc)
        return name

    def _when(self, item: Item, ctx: _Ctx) -> bool:
        if "when" not in item.meta:
            return True
        value = self._eval(item.meta["when"], item.meta_loc("when"), ctx)
        if not isinstance(value, bool):
            raise SpecError(f"'when' must be true or false, got {shown(value)}", item.meta_loc("when"))
        return value

    def _repeat(self, item: Item, ctx: _Ctx) -> int:
        if "repeat" not in item.meta:
            return 1
        loc = item.meta_loc("repeat")
        value = self._eval(item.meta["repeat"], loc, ctx)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10_000:
            raise SpecError(f"'repeat' must be a whole number from 1 to 10000, got {shown(value)}", loc)
        return value

    def _inputs(self, item: Item, ins: Inputs, ctx: _Ctx) -> Inputs:
        """What `item` receives: `ins`, or the references its `from:` makes (several only for an op)."""
        if "from" not in item.meta:
            return ins
        value, loc = item.meta["from"], item.meta_loc("from")
        if self.recording:  # a reference is looked up in the names around it: no instance holding one is copied
            self.refs_made += 1
        if isinstance(value, str) and value:
            return (Ref(value, ctx.names, loc),)
        if isinstance(value, Sequence) and len(value) >= 2 and all(isinstance(v, str) and v for v in value):
            if not isinstance(item, OpUse):
                raise SpecError("a 'from' list feeds the inputs of one op; a block or container takes one input",
                                loc, hint="name one layer here, or give the list to an op such as "
                                "{concat: null, from: [a, b]}")
            return tuple(Ref(v, ctx.names, value.loc_of(i)) for i, v in enumerate(value))
        hint = ("a list names two or more inputs; for one, write 'from: NAME'"
                if isinstance(value, Sequence) and len(value) == 1 else None)
        raise SpecError("'from' takes the name of an earlier layer or block", loc, hint=hint)

    # -- after the walk -----------------------------------------------------

    def _outputs(self, names: Names, last: Source) -> list[PendingOutput]:
        raw = self.spec.outputs
        if raw is None:
            return [PendingOutput("output", last, False, self.spec.tree.loc_of("body"))]
        if not isinstance(raw, Mapping) or not raw:
            raise SpecError("'outputs' must map output names to layer names", self.spec.loc("outputs"))
        outputs: list[PendingOutput] = []
        for key, value in raw.items():
            loc = raw.loc_of(key)
            check_name(key, raw.key_loc(key))
            spec = validate(OutputSpec, {"node": value} if isinstance(value, str) else _plain(value),
                            value if isinstance(value, Mapping) else raw, f"output '{key}'", loc)
            if spec.node in self.omitted:
                continue  # switched off by its `when:`
            outputs.append(PendingOutput(key, Ref(spec.node, names, loc), spec.train_only, loc))
        if not outputs:
            raise SpecError("every output names a layer switched off by its 'when:'", self.spec.loc("outputs"))
        if not any(not o.train_only for o in outputs):
            raise SpecError("every output is train_only; the model would return nothing in eval mode",
                            self.spec.loc("outputs"))
        return outputs


# -- helpers ----------------------------------------------------------------


@dataclass(frozen=True)
class _Record:
    """What expanding one block instance made, in order, its paths relative to the instance's root (a suffix:
    "" for the root itself, ".branch0.0" below it), for `_Walk._replay` to make again under another root."""

    events: tuple[tuple, ...]
    out: Any  # its output: a suffix, _INSTANCE_INPUT, or None where its `when:` dropped it


@dataclass(frozen=True)
class _Walked:
    """A block instance walked while recording: its slice of the walk's log and what it was walked from, until an
    equal instance asks for its `_Record` (most instances have no equal, and their record is never made)."""

    start: int
    end: int
    root: str
    inp: Source
    outer: tuple[str, ...]  # the scopes around it
    bound: Optional[dict]  # its arguments
    out: Optional[Source]
    reads_in: bool  # whether it read `$in` or `$in_shape` (then what it made holds for one input shape)


class _Unmovable(Exception):
    """What an instance made is not a function of its root and input alone."""


def _instance_key(block: str, bound: dict[str, Any], stack: tuple[str, ...], scopeless: bool) -> Optional[tuple]:
    """What a block instance's walk reads from its call: the block, its argument values (exact types; floats by
    their bits), the blocks around it (for the recursion check) and whether its name adds a scope level; None
    where an argument is not a plain scalar (a list or mapping may carry locations of its own)."""
    values = []
    for value in bound.values():
        kind = type(value)
        if kind is float:
            values.append((float, value.hex()))
        elif kind in _KEY_TYPES:
            values.append((kind, value))
        else:
            return None
    return block, stack, scopeless, tuple(values)


def _relative(events: list[tuple], root: str, inp: Source, outer: tuple[str, ...], bound: Optional[dict],
              out: Optional[Source]) -> Optional[_Record]:
    """The record of `events`, made by an instance rooted at `root` that received `inp` inside scopes `outer`;
    None unless everything it made lies under `root` and reads nothing from outside but `inp`."""
    cut, below = len(root), root + "."
    made: set[str] = set()

    def suffix(path: str) -> str:
        if path == root or path.startswith(below):
            return path[cut:]
        raise _Unmovable

    def source(src: Source) -> Any:
        if isinstance(src, str) and src in made:
            return src[cut:]
        if src is inp or (isinstance(src, str) and src == inp):
            return _INSTANCE_INPUT
        raise _Unmovable

    parent = outer[-1] if outer else None
    depth = len(outer)
    relative: list[tuple] = []
    try:
        for event in events:
            kind = event[0]
            if kind == _LAYER:
                layer = event[1]
                if layer.scopes[:depth] != outer:
                    raise _Unmovable
                relative.append((_LAYER, suffix(layer.id), layer, tuple(source(i) for i in layer.inputs),
                                 tuple(suffix(s) for s in layer.scopes[depth:])))
                made.add(layer.id)
            elif kind == _CLAIM:
                relative.append((_CLAIM, suffix(event[1]), event[2]))
            elif kind == _SCOPE:
                scope = event[1]
                relative.append((_SCOPE, suffix(scope.id), scope.kind, scope.block, scope.loc,
                                 _OUTER if scope.parent == parent else suffix(scope.parent or ""),
                                 _BOUND if scope.args is bound else scope.args))
            elif kind == _OUTPUT:
                relative.append((_OUTPUT, suffix(event[1]), source(event[2])))
            elif kind == _JOIN:
                relative.append((_JOIN, suffix(event[1]), suffix(event[2]), event[3]))
            else:
                relative.append((_OMIT, suffix(event[1])))
        result = out if out is None else source(out)
    except _Unmovable:
        return None
    return _Record(tuple(relative), result)


def _scopeless(name: Optional[str]) -> bool:
    """Names starting with '_' add no level to module paths (their children join the parent's)."""
    return name is not None and name.startswith("_")


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


def _with_holes(item: Item, levels: tuple[Mapping, ...]) -> tuple[Mapping, Any, list[tuple[str, Loc, tuple]]]:
    """An op item's arguments laid over its defaults (outermost first); their plain data; their expressions."""
    merged = item.value if item.value is not None else located({}, item.loc)
    if not isinstance(merged, Mapping):
        raise SpecError(f"the arguments of '{item.kind}' must be a mapping, e.g. {{k: 3}}", item.meta_loc(item.kind))
    for level in reversed(levels):
        merged = _merge(level, merged)
    return merged, _plain(merged), expressions(merged, item.loc)


def _content(data: Any) -> Optional[Hashable]:
    """Plain data as a key equal only for equal data of equal types (1, 1.0 and True differ, and -0.0 and 0.0
    too); None where it holds something unhashable."""
    kind = type(data)
    if kind in _KEY_TYPES:
        return kind, data
    if kind is float:
        return float, data.hex()
    if isinstance(data, dict):
        items = []
        for key, value in data.items():
            content = _content(value)
            if content is None:
                return None
            items.append((key, content))
        return dict, tuple(items)
    if isinstance(data, list):
        items = []
        for value in data:
            content = _content(value)
            if content is None:
                return None
            items.append(content)
        return list, tuple(items)
    return (kind, data) if _hashable(data) else None


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
