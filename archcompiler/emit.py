"""Shaped `Graph` -> one standalone PyTorch source file.

In: a `Graph` after `infer_shapes`.  Out: the text of a Python module that
imports only torch: a class per block template (per variant of it, when
`when:` or fixed arguments make instances differ), with the template's
parameters as constructor arguments and a readable `forward`; the few
modules archc adds to torch.nn (copied from `archcompiler.modules`); and a
model class named after the spec.  The module tree, and so the state_dict,
is the compiled model's: loaded with the same weights it computes the same
outputs.

How the code is written:
- every layer's constructor and call are its op's `lowering` description
  printed by `codegen` (the compiled model is built from the same
  description); an argument written in the spec as an expression over a
  block's parameters (`$c3r`, `${4 * c}`) stays that expression, other
  values are literals;
- inside a template, channel counts flow symbolically from `in_channels`
  (a conv's output is its `out`, a concat's the sum of its branches), so
  one class serves instances at different depths; anything else that
  differs between instances makes a variant class;
- a chain whose layers each take the one before is an `nn.Sequential`;
  other named groups are plain `nn.Module` holders;
- the model class is written for the spec's parameter values (`--set`):
  parameters that change structure (`when:`, `repeat:`) are fixed there,
  and the docstring says which values were used.
"""

from __future__ import annotations

import inspect
import keyword
import re
from typing import Any, Optional

from . import expr
from .codegen import RESERVED, Names, emitted, execution_order, identifier, is_module_call, is_parameter, statement
from .graph import Graph, Node, Scope, attribute_ref, class_name
from .ops import OPS

# Support code a generated file may need: what a description names by a bare name (`codegen.render`
# asks for it), copied by name from archcompiler.modules (each of its definitions, in file order) or,
# for helpers that shape inference shares (`rbf_prototypes`), from archcompiler.ops; with what their
# own source calls.  `ShapeError` is written as a stub.


def _support_code(needed: set[str]) -> list[str]:
    """The source of every support definition in `needed` and of those they use, in a fixed order."""
    from . import modules, ops

    own = [n for n, v in vars(modules).items() if not n.startswith("_") and getattr(v, "__module__", None) == modules.__name__]
    texts = {"ShapeError": "class ShapeError(ValueError):\n    pass"}
    for name in [*sorted(n for n in needed if n not in own and n != "ShapeError"), *own]:
        texts[name] = inspect.getsource(getattr(modules if name in own else ops, name)).rstrip()
    order = ["ShapeError", *(n for n in texts if n != "ShapeError" and n not in own), *own]
    closed, todo = set(), list(needed)
    while todo:
        name = todo.pop()
        if name not in closed:
            closed.add(name)
            todo += [other for other in order if other != name and re.search(rf"\b{other}\(", texts.get(name, ""))]
    return [texts[n] for n in order if n in closed]


def emit_python(graph: Graph, source_path: Optional[str] = None) -> str:
    """The standalone module's source text."""
    return _Emitter(graph).run(source_path or graph.path)


def _materialised(scope_id: str) -> bool:
    """A scope adds a level to module names unless its name starts with `_`."""
    return not scope_id.rsplit(".", 1)[-1].startswith("_")


def _module_path(scope_id: str) -> str:
    return ".".join(part for part in scope_id.split(".") if not part.startswith("_"))


# Functions of the expression language that are Python's own builtins too, so that an expression calling
# them can stay an expression in a block class (others, such as `make_divisible`, are written as values).
_BUILTIN_CALLS = frozenset({"round", "int", "float", "min", "max", "abs"})


def _portable(text: str, bindable: set[str]) -> bool:
    """Whether expression `text` means the same in a block class: every name it reads is a parameter of the
    block or of the spec (not a variable bound where it stands, such as `in` or `i`), and every function it
    calls is a Python builtin."""
    called = set(re.findall(r"([A-Za-z_]\w*)\s*\(", expr.source_of(text)))
    return expr.names_in(text) <= bindable and called <= _BUILTIN_CALLS


class _Source:
    """What an op's `source` function may ask of the emitter for one node."""

    def __init__(self, node: Node, cin: str, symbolic: bool, body: "_Body"):
        self.node, self.cin, self.symbolic, self.body = node, cin, symbolic, body
        # The expressions this node's class can keep; the others are written as this instance's values.  A
        # node's expressions are in terms of its innermost block instance: inside another instance nested in
        # this one (in a chain, or scopeless), they mean that block's parameters, not this block's.
        owner = next((s for s in reversed(node.scopes) if body.graph.scopes[s].block), None)
        mine = symbolic and body.root is not None and owner == body.root.id
        bindable = {*body.root.args, *body.graph.params} if mine else set()
        self.exprs = {path: text for path, text in node.exprs.items() if mine and _portable(text, bindable)}

    def is_expr(self, field: Any) -> bool:
        path = field if isinstance(field, tuple) else (field,)
        return any(p[:len(path)] == path for p in self.exprs)

    def arg(self, field: Any, value: Any) -> str:
        path = field if isinstance(field, tuple) else (field,)
        return self._code(value, path)

    def _code(self, value: Any, path: tuple) -> str:
        if path in self.exprs:
            text = expr.source_of(self.exprs[path]).strip()
            self.body.names_used.update(expr.names_in(self.exprs[path]))
            return text if re.fullmatch(r"[A-Za-z_]\w*", text) else f"({text})"
        if isinstance(value, (list, tuple)):
            items = [self._code(v, (*path, i)) for i, v in enumerate(value)]
            return f"({', '.join(items)}{',' if len(items) == 1 else ''})"
        return repr(value)

    def attr(self, field: str, value: Any) -> str:
        """A number the forward needs: a literal, or an attribute set in __init__ from an expression."""
        code = self.arg(field, value)
        if not self.is_expr(field):
            return code
        name = f"{identifier(self.body.rel(self.node.id))}_{field}"
        self.body.init.append(f"self.{name} = {code}")
        return f"self.{name}"

    def need(self, name: str) -> None:
        self.body.emitter.support.add(name)


class _Body:
    """__init__ and forward lines for one root: the model (root None) or one block instance."""

    def __init__(self, emitter: "_Emitter", root: Optional[Scope]):
        self.emitter, self.graph, self.root = emitter, emitter.graph, root
        self.symbolic = root is not None
        path = _module_path(root.id) if root is not None else ""
        self.prefix = path + "." if path else ""
        self.members = list(root.nodes) if root is not None else list(self.graph.nodes)
        self.inside = set(self.members)
        self.init: list[str] = []
        self.names_used: set[str] = set()
        self.chan: dict[str, str] = {}
        self.calls: dict[str, tuple[Optional[str], str]] = {}
        self.holders: set[str] = set()
        self.parameters: set[str] = set()  # nodes that are a parameter at their path, not a module
        self.units = {n: self.emitter.unit_within(root, n) for n in self.members}

    def rel(self, name: str) -> str:
        path = name if name in self.graph.nodes else _module_path(name)
        return path[len(self.prefix):] if self.prefix and path.startswith(self.prefix) else path

    def external_inputs(self, nodes: list[str]) -> list[str]:
        inside = set(nodes)
        return list(dict.fromkeys(i for n in nodes for i in self.graph.nodes[n].inputs if i not in inside))

    def channels(self, node_id: str) -> str:
        if node_id in self.chan:
            return self.chan[node_id]
        shape = self.graph.shape_of(node_id)
        return repr(shape[0])

    def _note_channels(self, node: Node, src: _Source) -> None:
        if not self.symbolic:
            return
        rule = OPS[node.op].channels
        if rule is not None:
            self.chan[node.id] = rule(node.args, [self.channels(i) for i in node.inputs],
                                      self.graph.input_shapes(node.id), src)
        elif node.inputs:
            self.chan[node.id] = self.channels(node.inputs[0])

    def build(self) -> None:
        externals = self.external_inputs(self.members)
        if self.symbolic and externals:
            self.chan[externals[0]] = "in_channels"
        for n in self.members:  # constructors, calls and channels of the layers this body writes itself
            unit = self.units[n]
            if unit != n and self.graph.scopes[unit].block:
                continue  # written by the block's own class; its output's channels stay a literal
            node = self.graph.nodes[n]
            shapes = self.graph.input_shapes(n)
            src = _Source(node, self.channels(node.inputs[0]) if node.inputs else "0", self.symbolic, self)
            self.calls[n] = emitted(OPS[node.op], node.args, shapes, src)
            if is_parameter(OPS[node.op], node.args, shapes):
                self.parameters.add(n)
            self._note_channels(node, src)
        attached: set[str] = set()
        for n in self.members:  # attach in declaration order: the state_dict's order
            unit = self.units[n]
            if unit in attached:
                continue
            attached.add(unit)
            ctor = self.emitter.scope_ctor(self, unit) if unit != n else self.calls[n][0]
            if ctor is not None:
                self._attach(self.rel(unit), ctor, unit in self.parameters)

    def _attach(self, rel: str, ctor: str, parameter: bool = False) -> None:
        *parents, leaf = rel.split(".")
        base = "self"
        for i, part in enumerate(parents):
            path = ".".join(parents[:i + 1])
            if path not in self.holders:
                self.holders.add(path)
                self.init.append(_assign(base, part, "nn.Module()"))
            base = attribute_ref(base, part)
        self.init.append(_assign(base, leaf, ctor, parameter))

    def forward(self) -> tuple[list[tuple[bool, str]], dict[str, str]]:
        """(train-only?, line) for each call in execution order, and each output node's variable."""
        var = {e: ("x" if k == 0 else f"x{k + 1}") for k, e in enumerate(self.external_inputs(self.members))}
        names = Names((*var.values(), *RESERVED))
        lines: list[tuple[bool, str]] = []
        for n in execution_order(self.graph):
            if n not in self.inside:
                continue
            unit = self.units[n]
            if unit != n:
                scope = self.graph.scopes[unit]
                if n != scope.output:
                    continue
                args = self.external_inputs(scope.nodes)
                call = "{m}(" + ", ".join("{%d}" % k for k in range(len(args))) + ")"
                train = all(self.graph.nodes[m].train_only for m in scope.nodes)
            else:
                call, args, train = self.calls[n][1], self.graph.nodes[n].inputs, self.graph.nodes[n].train_only
            name = names.add(self.rel(unit))
            lines.append((train, statement(name, call, [var[a] for a in args], self.rel(unit), unit in self.parameters)))
            var[n] = name
        return lines, var


def _assign(base: str, name: str, ctor: str, parameter: bool = False) -> str:
    if name.isidentifier() and not keyword.iskeyword(name):
        return f"{base}.{name} = {ctor}"  # an nn.Parameter assigned to a module is registered as one
    return f"{base}.{'register_parameter' if parameter else 'add_module'}({name!r}, {ctor})"


class _Emitter:
    def __init__(self, graph: Graph):
        self.graph = graph
        self.support: set[str] = set()
        self.classes: dict[str, str] = {}  # class text (with placeholders) -> class name
        self.sources: list[tuple[str, str]] = []  # (class name, text), in order of definition
        self.instances: dict[str, list[str]] = {}
        self.meta: dict[str, tuple[str, list[str]]] = {}  # class name -> (block, block params)
        self.chains: dict[str, bool] = {}

    # -- what is one module ---------------------------------------------------

    def unit_within(self, root: Optional[Scope], node_id: str) -> str:
        """The node's outermost block instance or chain strictly inside `root`, or the node itself."""
        scopes = self.graph.nodes[node_id].scopes
        if root is not None:
            scopes = scopes[scopes.index(root.id) + 1:]
        for scope_id in scopes:
            if not _materialised(scope_id):
                continue
            scope = self.graph.scopes[scope_id]
            if scope.block or self.is_chain(scope):
                return scope_id
        return node_id

    def is_chain(self, scope: Scope) -> bool:
        """A named group whose members (layers, block instances, chains) each take the one before."""
        if scope.id not in self.chains:
            self.chains[scope.id] = False  # provisional, while deciding
            self.chains[scope.id] = self._decide_chain(scope)
        return self.chains[scope.id]

    def _decide_chain(self, scope: Scope) -> bool:
        g = self.graph
        if scope.block or scope.kind not in ("seq", "repeat"):
            return False
        if any(not _materialised(s) for n in scope.nodes for s in g.nodes[n].scopes[g.nodes[n].scopes.index(scope.id):]):
            return False  # a scopeless group inside would put its layers at this level
        members = list(dict.fromkeys(self.unit_within(scope, n) for n in scope.nodes))
        previous: Optional[str] = None
        for unit in members:
            if unit in g.scopes:
                sub = g.scopes[unit]
                ins = list(dict.fromkeys(i for m in sub.nodes for i in g.nodes[m].inputs if i not in sub.nodes))
                out = sub.output
            else:
                node = g.nodes[unit]
                if not is_module_call(OPS[node.op], node.args, g.input_shapes(node.id)):
                    return False
                ins, out = list(node.inputs), unit
            if len(ins) != 1 or (previous is None and ins[0] in scope.nodes) or (previous and ins[0] != previous):
                return False
            previous = out
        return bool(members) and previous == scope.output

    def scope_ctor(self, body: _Body, scope_id: str) -> str:
        scope = self.graph.scopes[scope_id]
        if scope.block:
            return self.instance_ctor(body, scope)
        members = list(dict.fromkeys(self.unit_within(scope, n) for n in scope.nodes))
        parts = [self.scope_ctor(body, u) if u in self.graph.scopes else body.calls[u][0] for u in members]
        leaves = [(_module_path(u) if u in self.graph.scopes else u).rsplit(".", 1)[-1] for u in members]
        if leaves == [str(i) for i in range(len(leaves))]:
            if len(parts) <= 2 and all("\n" not in p for p in parts):
                return f"nn.Sequential({', '.join(parts)})"
            return "nn.Sequential(\n" + _indent(",\n".join(parts), 4) + ",\n)"
        items = ",\n".join(f"({leaf!r}, {part})" for leaf, part in zip(leaves, parts))
        return "nn.Sequential(OrderedDict([\n" + _indent(items, 4) + ",\n]))"

    def instance_ctor(self, body: _Body, scope: Scope) -> str:
        name, spec_params = self.template_class(scope)
        entry = body.external_inputs(scope.nodes)
        args = [body.channels(entry[0]) if entry else "0", *(repr(v) for v in scope.args.values())]
        args += [f"{p}={self.graph.params[p]!r}" for p in spec_params]
        return f"{name}({', '.join(args)})"

    def template_class(self, scope: Scope) -> tuple[str, list[str]]:
        """The class for block instance `scope` (new, or an identical earlier one) and the spec parameters it takes."""
        body = _Body(self, scope)
        body.build()
        lines, var = body.forward()
        block_params = list(scope.args)
        spec_params = sorted(n for n in body.names_used if n not in block_params)
        signature = ", ".join(["self", "in_channels", *block_params, *(f"{p}={self.graph.params[p]!r}" for p in spec_params)])
        inputs = ", ".join("x" if k == 0 else f"x{k + 1}" for k in range(len(body.external_inputs(scope.nodes))))
        text = "\n".join([
            "class {NAME}(nn.Module):",
            "    {DOC}",
            "",
            f"    def __init__({signature}):",
            "        super().__init__()",
            *_indent("\n".join(body.init), 8).splitlines(),
            "",
            f"    def forward(self, {inputs}):",
            *("        " + line for _, line in lines),
            f"        return {var[scope.output]}",
        ])
        if text not in self.classes:
            base, k = class_name(scope.block), 2
            name = base
            while name in self.instances:
                name, k = f"{base}{k}", k + 1
            self.classes[text] = name
            self.sources.append((name, text))
            self.instances[name] = []
            self.meta[name] = (scope.block, block_params)
        name = self.classes[text]
        self.instances[name].append(scope.id)
        return name, spec_params

    # -- the file ----------------------------------------------------------------

    def run(self, source_path: str) -> str:
        g = self.graph
        model = _Body(self, None)
        model.build()
        lines, var = model.forward()
        model_name = class_name(g.name)
        outputs = list(g.outputs.values())
        eval_outs = [o for o in outputs if not o.train_only]

        def result(outs: list, tuple_name: str) -> str:
            if len(outs) == 1:
                return var[outs[0].node]
            return f"{tuple_name}(" + ", ".join(f"{o.name}={var[o.node]}" for o in outs) + ")"

        forward = ["def forward(self, x):"]
        for k, (train, line) in enumerate(lines):  # runs of train-only calls (aux heads) where they branch off
            if train and (k == 0 or not lines[k - 1][0]):
                forward.append("    if self.training:")
            forward.append(("        " if train else "    ") + line)
        if len(outputs) > len(eval_outs):
            forward += ["    if self.training:", f"        return {result(outputs, model_name + 'Outputs')}"]
        forward.append(f"    return {result(eval_outs, model_name + 'EvalOutputs')}")
        built = ", ".join(f"{k}={v!r}" for k, v in g.params.items()) or "its defaults"
        model_text = "\n".join([
            f"class {model_name}(nn.Module):",
            f'    """{g.title or g.name}, built with {built}."""',
            "",
            "    def __init__(self):",
            "        super().__init__()",
            *_indent("\n".join(model.init), 8).splitlines(),
            "",
            *("    " + line for line in forward),
        ])
        return self._file(source_path, model_name, model_text, outputs, eval_outs)

    def _file(self, source_path: str, model_name: str, model_text: str, outputs: list, eval_outs: list) -> str:
        g = self.graph
        support = _support_code(set(self.support))
        classes = []
        for name, text in self.sources:
            block, params = self.meta[name]
            doc = (f'"""Block `{block}`' + (f"({', '.join(params)})" if params else "")
                   + f" of {g.name}; used by {', '.join(self.instances[name])}." + '"""')
            classes.append(text.replace("{NAME}", name, 1).replace("{DOC}", doc, 1))
        built = ", ".join(f"{k}={v!r}" for k, v in g.params.items()) or "no parameters"
        # Users' ops: the modules that registered them (plugins.register_op), imported by name.
        plugins = sorted({OPS[n.op].origin for n in g.nodes.values() if OPS[n.op].origin})
        header = "\n".join([
            f'"""{g.title or g.name}: standalone PyTorch source generated by archc from {source_path}.',
            "",
            *([f"Paper: {g.paper}", ""] if g.paper else []),
            f"Built with {built}; regenerate with `archc build SPEC --emit python --set K=V` for others.",
            f"`{model_name}()` has the compiled model's state_dict keys and computes the same outputs;",
            "this file imports only torch"
            + (f" and the archc plugins it uses: {', '.join(plugins)}." if plugins else "."),
            '"""',
            "",
            "import math",
            "from collections import OrderedDict, namedtuple",
            "from typing import Optional, Sequence",
            "",
            "import torch",
            "import torch.nn as nn",
            "import torch.nn.functional as F",
            *(f"import {module}" for module in plugins),
            "",
            f"{model_name}Outputs = namedtuple({model_name + 'Outputs'!r}, {[o.name for o in outputs]!r})",
            f"{model_name}EvalOutputs = namedtuple({model_name + 'EvalOutputs'!r}, {[o.name for o in eval_outs]!r})",
        ])
        return "\n\n\n".join([header, *support, *classes, model_text]) + "\n"


def _indent(text: str, n: int) -> str:
    return "\n".join(" " * n + line if line else line for line in text.splitlines())
