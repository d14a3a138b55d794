"""The graph IR: what `expand` produces and every later stage reads.

`expand` makes an `Expanded` graph of `Layer`s (wired, no shapes);
`shapes.infer_shapes` turns it into a `Graph` of `Node`s, whose `shape` is
always set.  Both are frozen: a pass makes new ones rather than editing them.
A `Graph` is a mapping of `Node`s (one per layer or join, named by
its full dotted path, which is also its module path in the compiled model),
each naming its inputs, plus the tree of `Scope`s (block instances and named containers) that the
report aggregates over and the diagrams draw as clusters.  Node order in
`Graph.nodes` is declaration order, which is the compiled model's
state_dict order.  `dag` is the same wiring as a networkx DiGraph, made
when first asked for (the static path never needs it, nor networkx's import).
"""

from __future__ import annotations

import keyword
import re
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, Iterable, Mapping, Optional, Sequence, TypeVar

from .errors import Loc
from .ops import Args, Shape

if TYPE_CHECKING:
    import networkx as nx

INPUT = "input"  # the id of the model's input node

# Attributes that every torch.nn.Module (and the compiled model) already has.  A
# layer name becomes a submodule attribute at its level of the module tree, so
# a layer called `forward` or `training` cannot exist there: torch refuses it
# with a KeyError at build time.  `expand` refuses these names up front, without
# torch; tests/test_graph.py keeps the list in step with the installed torch.
MODULE_ATTRIBUTES = frozenset((
    "EvalOutputs", "Outputs", "T_destination", "_apply", "_backward_hooks", "_backward_pre_hooks", "_buffers",
    "_call_impl", "_compiled_call_impl", "_forward_all", "_forward_all_code", "_forward_all_parts",
    "_forward_all_text", "_forward_code", "_forward_hooks", "_forward_hooks_always_called",
    "_forward_hooks_with_kwargs", "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_get_backward_hooks",
    "_get_backward_pre_hooks", "_get_name", "_is_full_backward_hook", "_is_torch_compile", "_load_from_state_dict",
    "_load_state_dict_post_hooks", "_load_state_dict_pre_hooks", "_maybe_warn_non_full_backward_hook", "_modules",
    "_named_members", "_non_persistent_buffers_set", "_parameters", "_register_load_state_dict_pre_hook",
    "_register_state_dict_hook", "_replicate_for_data_parallel", "_save_to_state_dict", "_slow_forward",
    "_state_dict_hooks", "_state_dict_pre_hooks", "_version", "_wrapped_call_impl", "add_module", "apply",
    "bfloat16", "buffers", "call_super_init", "children", "code", "compile", "cpu", "cuda", "double",
    "dump_patches", "eval", "extra_repr", "float", "forward", "get_buffer", "get_extra_state", "get_parameter",
    "get_submodule", "graph", "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers",
    "named_children", "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook", "register_state_dict_pre_hook",
    "requires_grad_", "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
))


def is_module_attribute(name: str) -> bool:
    """Whether a layer called `name` would clash with an attribute of torch.nn.Module.

    Every name starting with `__` is Python's or torch's own (dunders, and attributes such as
    torch.compile's `___needs_generation_tag_patch`, which appear on nn.Module once it has run).
    """
    return name in MODULE_ATTRIBUTES or name.startswith("__")


@dataclass(frozen=True)
class Layer:
    """One layer (or join) of the network, wired, before shape inference (what `expand` makes)."""

    id: str  # full dotted name, e.g. "inception3a.branch2.0"; also its module path
    op: str  # a name in ops.OPS
    args: Args
    inputs: list[str]  # ordered input node ids (INPUT for the model input)
    loc: Loc  # the YAML that made it
    scopes: tuple[str, ...] = ()  # enclosing scope ids, outermost first
    train_only: bool = False  # runs only in training mode (feeds only train-only outputs)
    # The spec's expression behind each argument that had one, by path in the arguments
    # (("out",), ("norm", "eps"), ("k", 1)): `$c3r`, `${4 * c}`.  Standalone source keeps them.
    exprs: dict[tuple, str] = field(default_factory=dict)
    inputs_loc: Optional[Loc] = None  # the `from:` that named the inputs; None: the layer before


@dataclass(frozen=True)
class Node(Layer):
    """A `Layer` with its output shape: what `shapes.infer_shapes` makes and every later stage reads."""

    shape: Shape = field(kw_only=True)  # one sample's output shape, batch excluded

    @classmethod
    def shaped(cls, layer: Layer, shape: Shape) -> "Node":
        if type(layer) is Layer:  # the usual case: its attributes are exactly its fields
            node = object.__new__(cls)  # as `frozen` does, without a keyword dict per node
            values = node.__dict__
            values.update(layer.__dict__)
            values["shape"] = shape
            return node
        return frozen(cls, {**{name: getattr(layer, name) for name in _LAYER_FIELDS}, "shape": shape})


_LAYER_FIELDS = tuple(f.name for f in fields(Layer))  # once: `fields()` per node was a tenth of `infer_shapes`

F = TypeVar("F")


def frozen(cls: type[F], values: dict[str, Any]) -> F:
    """The instance of frozen dataclass `cls` that `cls(**values)` makes, given a value for every field.

    Without the generated `__init__`, which sets each field through `object.__setattr__`: over the
    thousands of layers, nodes and rows a summary makes, that was a tenth of its time.  The values come as
    one dict, not as keywords, which would cost a call a second dict.  Only for dataclasses without
    `__post_init__`.
    """
    instance = object.__new__(cls)
    instance.__dict__.update(values)
    return instance


@dataclass
class Scope:
    """A block instance or a named container: a row of its own in the report."""

    id: str  # full dotted name ("inception3a"); scopeless `_names` keep theirs here
    kind: str  # "seq", "concat", "add", "residual", "repeat" or "op" (a block whose body is one op)
    block: Optional[str]  # the block template's name for a block instance
    loc: Loc
    parent: Optional[str]
    output: str = ""  # id of the node whose value leaves the scope
    nodes: list[str] = field(default_factory=list)  # every node inside, transitively, in order
    args: dict[str, Any] = field(default_factory=dict)  # the block's bound parameters

    @property
    def depth(self) -> int:
        return self.id.count(".") + 1


@dataclass(frozen=True)
class Output:
    name: str
    node: str
    train_only: bool
    loc: Loc


N = TypeVar("N", bound=Layer)


@dataclass
class _Graph(Generic[N]):
    name: str
    title: Optional[str]
    paper: Optional[str]
    path: str
    input_shape: Shape
    input_loc: Loc
    params: dict[str, Any]  # the spec's parameters after overrides
    nodes: dict[str, N]
    scopes: dict[str, Scope]
    outputs: dict[str, Output]
    # Outputs chosen with `select_outputs` (feature maps): the model returns them as a dict.
    outputs_as_dict: bool = False

    @cached_property
    def dag(self) -> "nx.DiGraph":
        """The wiring as a networkx DiGraph: `input` and every node, an edge from each input to its reader."""
        return dag_of({k: n.inputs for k, n in self.nodes.items()})

    def order(self) -> list[str]:
        """Node ids in an order where every node follows its inputs (declaration order first)."""
        return list(self.topological)

    @cached_property
    def topological(self) -> tuple[str, ...]:
        """`order()`, found once per graph: shapes, the receptive fields and the forward's plan all walk it.
        (A graph's nodes are never changed once it is made; `select_outputs` makes a new one.)"""
        if declared_in_order(self.nodes):  # the usual case, without a forward `from:`
            return tuple(self.nodes)
        import networkx as nx

        position = {n: i for i, n in enumerate(self.nodes)}
        return tuple(n for n in nx.lexicographical_topological_sort(self.dag, key=lambda n: position.get(n, -1))
                     if n != INPUT)

    def eval_outputs(self) -> list[Output]:
        return [o for o in self.outputs.values() if not o.train_only]


@dataclass
class Expanded(_Graph[Layer]):
    """The network as `expand` makes it: wired and checked, without shapes."""


@dataclass
class Graph(_Graph[Node]):
    """The network after shape inference: every node's shape is known."""

    def shape_of(self, node_id: str) -> Shape:
        """The output shape of a node, or the input shape for `input`."""
        return self.input_shape if node_id == INPUT else self.nodes[node_id].shape

    def input_shapes(self, node_id: str) -> list[Shape]:
        """The shapes a node receives, in input order."""
        return [self.shape_of(i) for i in self.nodes[node_id].inputs]


def declared_in_order(nodes: Mapping[str, Layer]) -> bool:
    """Whether every node is declared after all of its inputs (then that order is topological)."""
    position = {n: i for i, n in enumerate(nodes)}
    for i, node in enumerate(nodes.values()):
        for src in node.inputs:
            if position.get(src, -1) >= i:
                return False
    return True


def dag_of(inputs: Mapping[str, Iterable[str]]) -> "nx.DiGraph":
    """A networkx DiGraph of `INPUT` and each node of `inputs` (node id -> its input ids), in that order."""
    import networkx as nx

    dag = nx.DiGraph()
    dag.add_node(INPUT)
    for node_id, sources in inputs.items():
        dag.add_node(node_id)
        for src in sources:
            dag.add_edge(src, node_id)
    return dag


def ancestors(inputs: Mapping[str, Iterable[str]], node_id: str) -> set[str]:
    """Every node that `node_id` depends on (`INPUT` among them where it does), as networkx's `ancestors`.

    `inputs` maps each node id to its input ids; the wiring has no cycle.
    """
    seen: set[str] = set()
    stack = [node_id]
    while stack:
        for src in inputs.get(stack.pop(), ()):
            if src not in seen:
                seen.add(src)
                stack.append(src)
    return seen


def class_name(name: str) -> str:
    """The Python class generated code gives a network or block: `inception_v3` -> `InceptionV3`."""
    camel = "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part) or "Model"
    return "Net" + camel if camel[0].isdigit() else camel


def attribute_ref(base: str, path: str) -> str:
    """Python for the submodule at dotted `path` under `base`: `self.a._modules['0'].conv`."""
    ref = base
    for part in path.split("."):
        ref += f".{part}" if part.isidentifier() and not keyword.iskeyword(part) else f"._modules[{part!r}]"
    return ref


def select_outputs(graph: Graph, names: Sequence[str]) -> Graph:
    """`graph` cut down to a feature extractor: `names` are its outputs, returned as a dict.

    A name is an output of the spec, a block instance or group (its output
    layer) or a layer.  Only the layers those outputs need remain, all of them
    running in eval and training mode alike; scopes keep their remaining layers.
    """
    from .errors import UserError, did_you_mean

    targets: dict[str, str] = {}
    for name in names:
        if name in graph.outputs:
            targets[name] = graph.outputs[name].node
        elif name in graph.scopes:
            targets[name] = graph.scopes[name].output
        elif name in graph.nodes:
            targets[name] = name
        else:
            known = [*graph.outputs, *graph.scopes, *graph.nodes]
            raise UserError(f"'{graph.name}' has no output, block or layer named '{name}'",
                            hint=did_you_mean(name, known) or "see the names in `archc summary`")
    if not targets:
        raise UserError("choose at least one output")
    needed = set(targets.values())
    inputs = {k: n.inputs for k, n in graph.nodes.items()}
    for node in targets.values():
        needed |= ancestors(inputs, node)
    needed.discard(INPUT)
    nodes = {k: replace(v, train_only=False) for k, v in graph.nodes.items() if k in needed}
    scopes = {}
    for scope in graph.scopes.values():
        kept = [n for n in scope.nodes if n in needed]
        if kept:
            output = scope.output if scope.output in needed else kept[-1]
            scopes[scope.id] = replace(scope, nodes=kept, output=output)
    outputs = {name: Output(name, node, False, graph.nodes[node].loc) for name, node in targets.items()}
    return replace(graph, nodes=nodes, scopes=scopes, outputs=outputs, outputs_as_dict=True)
