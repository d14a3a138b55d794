"""Wire and check: unwired layers -> `Layer`s, scopes and outputs (the last pass of `expand`).

In: the layers the expansion walk made (`Unwired`, whose inputs are node ids
or `Ref`s, the `from:` references still to look up), the scopes with their
outputs (also possibly `Ref`s), the outputs named under `outputs:`, and the
names that `when:` switched off.  Out: frozen `Layer`s whose inputs are node
ids, the scopes with their output node ids, and the `Output`s.

In order: every reference is resolved (`Ref.resolve`: the names table it
was written in, then full dotted paths); a cycle is refused, pointing at
the `from:` that closes it (networkx finds it, imported only for wiring
with a forward `from:`); the layers that only
training-mode outputs need are marked `train_only`; and a layer whose value
reaches no output is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from .errors import Loc, SpecError, did_you_mean
from .graph import INPUT, Layer, Output, Scope, ancestors, dag_of, frozen
from .ops import Args


class Names:
    """A container's local names (`from:` targets), chained to the enclosing one."""

    def __init__(self, parent: Optional["Names"] = None):
        self.parent = parent
        self.entries: dict[str, Source] = {}

    def lookup(self, name: str) -> Optional["Source"]:
        table: Optional[Names] = self
        while table is not None:
            if name in table.entries:
                return table.entries[name]
            table = table.parent
        return None


@dataclass(frozen=True, eq=False)  # each reference is its own: two alike in different block instances differ
class Ref:
    """A `from:` (or `outputs:`) reference: a name, the names table it is looked up in, and where it is written."""

    name: str
    names: Names = field(repr=False)
    loc: Loc


Source = Union[str, Ref]  # a node id (or INPUT), or a reference still to resolve


@dataclass(frozen=True)
class Unwired:
    """A layer as the expansion walk makes it: a `Layer` whose inputs may still be references."""

    id: str
    op: str
    args: Args
    inputs: tuple[Source, ...]
    loc: Loc
    scopes: tuple[str, ...] = ()
    exprs: dict[tuple, str] = field(default_factory=dict)
    inputs_loc: Optional[Loc] = None  # the `from:` that named the inputs


@dataclass(frozen=True)
class PendingOutput:
    name: str
    ref: Source
    train_only: bool
    loc: Loc


@dataclass(frozen=True)
class Wired:
    nodes: dict[str, Layer]
    scopes: dict[str, Scope]
    outputs: dict[str, Output]
    in_order: bool  # whether every node follows its inputs (`graph.declared_in_order`), as wiring found


def wire(layers: dict[str, Unwired], scopes: dict[str, Scope], scope_outputs: dict[str, Source],
         outputs: list[PendingOutput], omitted: set[str]) -> Wired:
    """Resolve every reference, check the DAG, mark training-only layers, refuse unused ones."""
    resolver = Resolver(layers, scope_outputs, omitted)
    from_locs: dict[str, Loc] = {}  # node -> the `from:` that feeds it, for cycle errors
    inputs: dict[str, list[str]] = {}
    in_order = True  # whether every layer follows its inputs: then the wiring has no cycle
    for layer in layers.values():
        resolved = []
        for i in layer.inputs:
            if isinstance(i, Ref):
                from_locs[layer.id] = i.loc  # the last reference among its inputs
                i = resolver.resolve(i)
            if i not in inputs and i != INPUT:  # `inputs` holds the layers before this one
                in_order = False
            resolved.append(i)
        inputs[layer.id] = resolved
    wired_scopes = {k: Scope(s.id, s.kind, s.block, s.loc, s.parent, resolver.resolve(scope_outputs[k]), s.nodes,
                             s.args) for k, s in scopes.items()}
    if not in_order:
        _refuse_cycles(layers, inputs, from_locs)
    final = {o.name: Output(o.name, resolver.resolve(o.ref), o.train_only, o.loc) for o in outputs}
    needed_eval: set[str] = set()
    needed: set[str] = set()
    for out in final.values():
        reach = ancestors(inputs, out.node) | {out.node}
        needed |= reach
        if not out.train_only:
            needed_eval |= reach
    nodes: dict[str, Layer] = {}
    for layer in layers.values():
        if layer.id not in needed:
            raise SpecError(f"the output of '{layer.id}' is never used", layer.loc,
                            hint="feed it into a later layer or name it under 'outputs'")
        nodes[layer.id] = frozen(Layer, {"id": layer.id, "op": layer.op, "args": layer.args, "inputs": inputs[layer.id],
                                         "loc": layer.loc, "scopes": layer.scopes,
                                         "train_only": layer.id not in needed_eval, "exprs": layer.exprs,
                                         "inputs_loc": layer.inputs_loc})
    return Wired(nodes, wired_scopes, final, in_order)


class Resolver:
    """Where a layer's inputs come from: a `Ref` (a `from:` name, `$prev`, a scope's output) -> the id of the
    node that makes it.  `wire` resolves every layer's inputs with one; `expand` asks one as it goes, to
    know the input shape behind `$in` before the walk is over."""

    def __init__(self, layers: dict[str, Unwired], scope_outputs: dict[str, Source], omitted: set[str]):
        self.layers, self.scope_outputs, self.omitted = layers, scope_outputs, omitted
        self.resolved: dict[int, str] = {}  # id(ref) -> node id
        self.refs: list[Ref] = []  # keeps the resolved refs (and so their ids) alive

    def resolve(self, source: Source) -> str:
        if not isinstance(source, Ref):
            return source
        hit = self.resolved.get(id(source))
        if hit is not None:
            return hit
        target = self.resolve(self.lookup(source))  # a `from:` pointing at another `from:` item's input
        self.resolved[id(source)] = target
        self.refs.append(source)
        return target

    def lookup(self, ref: Ref) -> Source:
        name, names, loc = ref.name, ref.names, ref.loc
        if name == INPUT:
            return INPUT
        found = names.lookup(name)
        if found is None and name in self.scope_outputs:
            found = self.scope_outputs[name]
        if found is None and name in self.layers:
            found = name
        if found is None:
            if name in self.omitted:
                raise SpecError(f"'{name}' is switched off by its 'when:' here", loc)
            raise SpecError(f"'{name}' names no layer or block", loc,
                            hint=did_you_mean(name, [*self.layers, *self.scope_outputs, *names.entries]))
        return found


def _refuse_cycles(layers: dict[str, Unwired], inputs: dict[str, list[str]], from_locs: dict[str, Loc]) -> None:
    """Refuse a cycle in the wiring at the `from:` that makes it (asked only where some edge points forward)."""
    import networkx as nx  # only for wiring with a forward `from:`

    try:
        cycle = nx.find_cycle(dag_of(inputs))
    except nx.NetworkXNoCycle:
        return
    names = [edge[0] for edge in cycle] + [cycle[0][0]]
    where = next((from_locs[v] for _, v in cycle if v in from_locs), layers[cycle[0][1]].loc)
    raise SpecError(f"the wiring has a cycle: {' -> '.join(names)}", where,
                    hint="'from:' must name a layer that does not depend on this one")

