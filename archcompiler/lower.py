"""Shaped `Graph` -> `torch.nn.Module` with a generated forward.

In: a `Graph` after `infer_shapes`.  Out: an instance of a class made for
this network: its submodule tree mirrors the spec's dotted names (so a spec
that names its layers like torchvision gets torchvision's state_dict keys,
in the same order), and its `forward` is straight-line Python generated
from the graph — one line per layer, intermediates released after their
last use, like torch.fx's code — never a loop that interprets nodes per
call.  Layers that feed only training-mode outputs (auxiliary heads) run
under `if self.training:`; in training mode a model with several outputs
returns a named tuple, in eval mode its eval outputs.

This is the only stage that imports torch.
"""

from __future__ import annotations

import collections
import inspect
import linecache
from typing import Any, Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import modules
from .codegen import RESERVED, Names, constructed, execution_order, inplace_plan, instantiate, statement
from .errors import UserError
from .graph import INPUT, Graph
from .graph import class_name as python_class_name
from .ops import OPS, Lowered, Lowering, RuleMemo


class Container(nn.Module):
    """Holds the layers of a block instance or branch under its spec name.

    The compiled model's generated forward calls the layers directly; a
    container is a namespace, so it has no forward of its own.
    """


class CompiledModel(nn.Module):
    """Base of every compiled network; `code` is the generated source (`forward`, then `_forward_all`)."""

    graph: Graph
    _forward_code: str  # per network: the generated forward's source
    _forward_all_parts: tuple  # per network: what `_forward_all` is generated from, when first needed

    @property
    def code(self) -> str:
        return self._forward_code + "\n" + self._forward_all_text()

    @classmethod
    def _forward_all_text(cls) -> str:
        """`_forward_all`'s source, generated the first time it is asked for and kept on the network's class."""
        text = cls.__dict__.get("_forward_all_code")
        if text is None:
            text = cls._forward_all_code = _forward_all_source(*cls._forward_all_parts)
        return text

    def _forward_all(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every node's value, by node id (`runtime_shapes`).  It is compiled the first time a network's class
        is asked, then kept on that class: building a model does not pay for it."""
        cls = type(self)
        cls._forward_all = _compiled(cls._forward_all_text(), f"<archc:{self.graph.name}:_forward_all>",
                                     {"torch": torch, "F": F}, "_forward_all")
        return cls._forward_all(self, x)


def lower(graph: Graph, *, seed: int = 0, device: Any = None, inplace: bool = True,
          stamp: bool = True) -> CompiledModel:
    """Build the module tree of `graph` (weights drawn from `seed`) and its forward.

    `inplace` (the default): activations and residual adds run in place where `codegen.inplace_plan`
    proves it safe, with the out-of-place forward's outputs and gradients; False: nothing runs in place
    (a debugging aid, and the baseline the tests compare against).  `stamp` (the default): the layers of
    equal descriptions after the first are `stamped` copies of it, with the weights their constructors
    would draw; False: every layer is made by its constructors (the baseline of that)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise UserError(f"the seed must be a whole number from 0 to 2**64 - 1 (torch's range), got {str(seed)[:40]}")
    target = check_device(device)
    construct = _on_device(target) if target is not None else constructed
    # The generator the weights are drawn from is the one seeded, and the caller's state of it restored after:
    # the CPU's for a CPU or meta build (torch.manual_seed would also reseed every accelerator's, left so after
    # the build, and takes 0.13 ms), else every device's seeded and the target's restored.
    accelerator = target is not None and target.type not in ("cpu", "meta")
    forked = dict(devices=[target], device_type=target.type) if accelerator else dict(devices=[])
    built: dict[str, Lowered] = {}
    # The layers of equal block instances are made from one description, each its own module: the first
    # by its constructors, the others, where `stampable`, as copies of it that draw their weights anew.
    descriptions: RuleMemo[Lowering] = RuleMemo()
    first: dict[int, Lowered] = {}  # id(description) -> the node built from it by its constructors
    with torch.random.fork_rng(**forked):
        (torch.manual_seed if accelerator else torch.default_generator.manual_seed)(seed)
        for node in graph.nodes.values():  # declaration order: the state_dict's order
            shapes = graph.input_shapes(node.id)
            description = descriptions(node.op, node.args, shapes, OPS[node.op].lowering, node.args, shapes)
            made = first.get(id(description)) if stamp else None
            if made is None:
                made = built[node.id] = instantiate(description, construct)
                if made.module is not None and not made.parameter and stampable(made.module):
                    first[id(description)] = made
            else:
                built[node.id] = Lowered(stamped(made.module), made.call, inplace_call=made.inplace_call,
                                         overwrite=made.overwrite)
    return assemble(graph, built, inplace=inplace)


# Module classes whose constructor draws random numbers only through `reset_parameters()` (or draws none),
# sets every parameter that method does not set and every buffer to values that follow from its arguments
# alone, and keeps nothing else but its arguments and torch.nn.Module's own bookkeeping.  A copy of one,
# its parameters drawn again by `reset_parameters()`, is what its constructor makes, in the same order of
# random draws: `stamped`.  A class not listed (a plugin's own module) is always built by its constructor.
STAMPABLE: frozenset[type] = frozenset({
    nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.LocalResponseNorm,
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Dropout, nn.Identity,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid,
    modules.ConvNormAct, modules.PartialConv2d, modules.Subsample2d, modules.RBF, modules.LayerNorm2d,
    modules.Permute, modules.Reshape, modules.ChannelShuffle, modules.StochasticDepth, modules.ScaledTanh,
})


def check_device(device: Any) -> Optional[torch.device]:
    """`device` as a `torch.device` (None stays None); a `UserError` where torch does not know it or it is not
    available here (CUDA on a CPU-only torch), before anything is built, not from deep inside a constructor."""
    if device is None:
        return None
    try:
        target = torch.device(device)
        if target.type not in ("cpu", "meta"):
            torch.empty(0, device=target)
    except (RuntimeError, AssertionError, TypeError, ValueError) as exc:
        text = str(exc).strip()
        reason = text.splitlines()[0].split(". ")[0].rstrip(".:") if text else type(exc).__name__  # torch's first sentence
        raise UserError(f"cannot build on device {str(device)[:40]!r}: {reason}",
                        hint="devices are named as torch names them: 'cpu', 'meta', 'cuda', 'cuda:1'") from None
    return target


def _on_device(device: torch.device) -> Callable[..., Any]:
    """`instantiate`'s constructor for `device`: `STAMPABLE` classes that take torch's `device=` keyword are
    given it; any other callee runs inside `torch.device(device)`, which also places what it makes there but
    runs Python for every torch call inside it (googlenet's constructors on the meta device: 19.1 ms in it,
    18.1 ms given `device=`).  On the meta device, `STAMPABLE` classes are made `_undrawn`."""
    make = _undrawn if device.type == "meta" else constructed

    def construct(cls: Any, *args: Any, **kwargs: Any) -> Any:
        if cls in _TAKES_DEVICE:
            return make(cls, *args, device=device, **kwargs)
        with device:
            return make(cls, *args, **kwargs)

    return construct


def _undrawn(cls: Any, *args: Any, **kwargs: Any) -> Any:
    """What `cls(*args, **kwargs)` makes on the meta device, where a `STAMPABLE` class's constructor runs
    without its `reset_parameters()`: meta tensors hold no values to draw or fill, and by what `STAMPABLE`
    admits the constructor sets nothing else there.  Those fills were a third of the constructors' time
    (googlenet: 29.6 ms with them, 19.1 ms without).  Any other class is constructed as it is."""
    if cls not in _RESETS:
        return cls(*args, **kwargs)
    module = cls.__new__(cls)
    # An instance attribute is found before the class's method, so the constructor's own call finds this.
    module.__dict__["reset_parameters"] = _no_values
    try:
        cls.__init__(module, *args, **kwargs)
    finally:
        del module.__dict__["reset_parameters"]
    return module


def _no_values() -> None:
    pass


# torch.nn's classes among them take `device=` and make every tensor there; most have `reset_parameters`.
_TAKES_DEVICE = frozenset(c for c in STAMPABLE if "device" in inspect.signature(c).parameters)
_RESETS = frozenset(c for c in STAMPABLE if hasattr(c, "reset_parameters"))


def stampable(module: nn.Module) -> bool:
    """Whether `module` and every module inside it are of a `STAMPABLE` class."""
    return all(type(m) in STAMPABLE for m in module.modules())


def stamped(template: nn.Module) -> nn.Module:
    """A new module, equal to what `template`'s constructor made, made without calling it again: torch's
    constructors run Python per attribute, and a network repeats a few layers many times.

    Its parameters are new tensors on the template's device, drawn by each submodule's `reset_parameters()`
    in the order the submodules were made (children before the module that holds them, as a description
    builds them); parameters of a module without that method, and every buffer, are copies of the
    template's (values its constructor set from its arguments).  Containers in `__dict__` (the hook and
    parameter dicts, lists) are copied; other attributes are the constructor's arguments, shared."""
    redraw: list[nn.Module] = []
    copy = _stamped(template, redraw)
    for module in redraw:  # innermost first, left to right: the constructors' order
        module.reset_parameters()
    return copy


def _stamped(template: nn.Module, redraw: list[nn.Module]) -> nn.Module:
    """The copy of `template` and its children, new parameters left empty where `redraw` (which it appends the
    modules to, in the constructors' order) is to draw them."""
    cls = type(template)
    copy = cls.__new__(cls)
    state = {k: (type(v)(v) if type(v) in _COPIED else v) for k, v in template.__dict__.items()}
    params = state["_parameters"]
    # On the meta device there are no values to draw (and no generator is advanced): copies will do.
    drawn = hasattr(cls, "reset_parameters") and any(p is not None and not p.is_meta for p in params.values())
    for name, p in params.items():
        if p is not None:
            value = torch.empty(p.shape, dtype=p.dtype, device=p.device) if drawn else p.detach().clone()
            params[name] = nn.Parameter(value, requires_grad=p.requires_grad)
    buffers = state["_buffers"]
    for name, b in buffers.items():
        if b is not None:
            buffers[name] = b.clone()
    children = state["_modules"]
    for name, child in children.items():
        if child is not None:
            children[name] = _stamped(child, redraw)
    copy.__dict__.update(state)
    if drawn:
        redraw.append(copy)
    return copy


_COPIED = (dict, collections.OrderedDict, set, list)


def assemble(graph: Graph, built: dict[str, Lowered], *, inplace: bool = True,
             base: type = CompiledModel) -> CompiledModel:
    """The model of `graph` from its built nodes (a module, or parameter, and call per node), the forward
    generated for those calls; a subclass of `base` (`optimize`'s inference build passes its own)."""
    calls = {k: (v.inplace_call or v.call) if inplace else v.call for k, v in built.items()}
    overwrite = {k: v.overwrite for k, v in built.items()} if inplace else {}
    model = _model_class(graph, calls, {k for k, v in built.items() if v.parameter}, overwrite, base)()
    for node_id, low in built.items():
        if low.module is not None:
            _attach(model, node_id, low.module, low.parameter)
    if not inplace:  # activations built with inplace=True (after a BatchNorm, inside ConvNormAct)
        for module in model.modules():
            if isinstance(getattr(module, "inplace", None), bool):
                module.inplace = False
    model.graph = graph
    return model


def _attach(root: nn.Module, path: str, module: Any, parameter: bool = False) -> None:
    """Put `module` at dotted `path` (containers made on the way); a `parameter` is registered there
    as a parameter of the enclosing module (state_dict key `path`), not as a submodule."""
    *parents, leaf = path.split(".")
    here = root
    for name in parents:
        child = here._modules.get(name)
        if child is None:
            child = Container()
            here.add_module(name, child)
        here = child
    if parameter:
        here.register_parameter(leaf, module)
    else:
        here.add_module(leaf, module)


def _model_class(graph: Graph, calls: dict[str, str], parameters: set[str],
                 overwrite: dict[str, dict[int, str]], base: type = CompiledModel) -> type:
    """A subclass of CompiledModel with forward and _forward_all generated for `graph`; the nodes in
    `parameters` are parameters at their paths, not modules."""
    class_name = python_class_name(graph.name)
    names = _variable_names(graph)
    outputs = list(graph.outputs.values())
    tuple_name = f"{class_name}Outputs"
    eval_names = [o.name for o in outputs if not o.train_only]
    namespace: dict[str, Any] = {"torch": torch, "F": F}
    if not graph.outputs_as_dict:
        namespace[tuple_name] = collections.namedtuple(tuple_name, [o.name for o in outputs])
        namespace[f"{class_name}EvalOutputs"] = collections.namedtuple(f"{class_name}EvalOutputs", eval_names)
    source = _forward_source(graph, names, calls, parameters, class_name, overwrite)
    cls = type(class_name, (base,), {
        "forward": _compiled(source, f"<archc:{graph.name}>", namespace, "forward"),
        "_forward_code": source,
        "_forward_all_parts": (graph, names, calls, parameters),
        "__doc__": f"{graph.title or graph.name}, compiled by archc from {graph.path}.",
        "__module__": __name__,
    })
    cls.Outputs = namespace.get(tuple_name, dict)
    cls.EvalOutputs = namespace.get(f"{class_name}EvalOutputs", dict)
    return cls


def _compiled(source: str, filename: str, namespace: dict[str, Any], name: str) -> Any:
    """Function `name` defined by generated `source`, its lines kept for tracebacks under `filename`."""
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # our own generated code; spec text never reaches it
    return namespace[name]


def _variable_names(graph: Graph) -> dict[str, str]:
    names = Names(("x", *RESERVED))
    return {INPUT: "x", **{node_id: names.add(node_id) for node_id in graph.nodes}}


def _line(graph: Graph, node_id: str, names: dict[str, str], calls: dict[str, str], parameters: set[str]) -> str:
    node = graph.nodes[node_id]
    return statement(names[node_id], calls[node_id], [names[i] for i in node.inputs], node.id, node_id in parameters)


def _forward_source(graph: Graph, names: dict[str, str], calls: dict[str, str], parameters: set[str],
                    class_name: str, overwrite: dict[str, dict[int, str]]) -> str:
    """The forward: every node in `codegen.execution_order` (the reference's, so that seeded dropout draws
    its masks in the same order), runs of train-only nodes (auxiliary heads, where they branch off) under
    `if self.training:`; a value released after its last use, and overwritten in place where
    `codegen.inplace_plan` proves it safe."""
    order = execution_order(graph)
    outputs = list(graph.outputs.values())
    keep = {o.node for o in outputs}
    last_use: dict[str, str] = {}
    for n in order:
        for i in graph.nodes[n].inputs:
            last_use[i] = n
    plan = inplace_plan(graph, order, lambda n: overwrite.get(n, {}), keep)
    calls = {n: overwrite[n][plan[n]] if n in plan else c for n, c in calls.items()}

    def dead(nodes: list[str]) -> list[str]:
        return [i for n in nodes for i in dict.fromkeys(graph.nodes[n].inputs) if last_use[i] == n and i not in keep]

    lines = ["def forward(self, x):"]
    k = 0
    while k < len(order):
        group = [order[k]]
        train = graph.nodes[order[k]].train_only
        while train and k + len(group) < len(order) and graph.nodes[order[k + len(group)]].train_only:
            group.append(order[k + len(group)])
        k += len(group)
        if train:
            lines.append("    if self.training:")
            lines.extend("        " + _line(graph, n, names, calls, parameters) for n in group)
        else:
            lines.extend("    " + _line(graph, n, names, calls, parameters) for n in group)
        released = list(dict.fromkeys(dead(group)))
        if released:
            lines.append("    " + "; ".join(f"{names[i]} = None" for i in released))

    def result(outs: list, tuple_name: str) -> str:
        if graph.outputs_as_dict:  # feature maps, by the names they were asked for
            return "{" + ", ".join(f"{o.name!r}: {names[o.node]}" for o in outs) + "}"
        if len(outs) == 1:
            return names[outs[0].node]
        return f"{tuple_name}(" + ", ".join(f"{o.name}={names[o.node]}" for o in outs) + ")"

    eval_outs = [o for o in outputs if not o.train_only]
    if len(outputs) > len(eval_outs):
        lines.append("    if self.training:")
        lines.append(f"        return {result(outputs, class_name + 'Outputs')}")
    lines.append(f"    return {result(eval_outs, class_name + 'EvalOutputs')}")
    return "\n".join(lines) + "\n"


def _forward_all_source(graph: Graph, names: dict[str, str], calls: dict[str, str], parameters: set[str]) -> str:
    lines = ["def _forward_all(self, x):", "    values = {}"]
    for n in graph.order():
        lines.append("    " + _line(graph, n, names, calls, parameters))
        lines.append(f"    values[{n!r}] = {names[n]}")
    lines.append("    return values")
    return "\n".join(lines) + "\n"


def runtime_shapes(model: CompiledModel, batch: int = 2, seed: int = 0) -> dict[str, tuple[int, ...]]:
    """Every node's output shape (batch dimension dropped) from a forward on random data."""
    graph = model.graph
    generator = torch.Generator().manual_seed(seed)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    x = torch.randn((batch, *graph.input_shape), generator=generator).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            values = model._forward_all(x)
    finally:
        model.train(was_training)
    return {k: tuple(v.shape[1:]) for k, v in values.items()}


def shape_mismatches(model: CompiledModel, batch: int = 2) -> list[tuple[str, tuple, tuple]]:
    """(node, inferred, runtime) for every node whose runtime shape differs from inference."""
    runtime = runtime_shapes(model, batch)
    return [(n, node.shape, runtime[n]) for n, node in model.graph.nodes.items() if runtime[n] != node.shape]
