"""Spec file -> `Spec`: the validated header of a network and its raw layers.

In: a path.  Out: a `Spec` whose header (`archc`, `name`, `input`, `params`,
`defaults`, `blocks`, `outputs`) has been checked by pydantic, and whose
layer trees (`body`, each block's body) are kept as located YAML for
`expand`, which validates each op's arguments once parameters are known.
Every error is a `SpecError` pointing at the offending text.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

from .errors import Loc, SpecError, did_you_mean, shorten, shown
from .expr import is_expression
from .graph import is_module_attribute
from .source import Mapping, Sequence, load_text, locate, parse_yaml

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Scalar = Union[StrictBool, StrictInt, StrictFloat, StrictStr, None]

# Keys that sit beside an item's op, block or container key.
META_KEYS = ("from", "repeat", "when", "names")
# The spec language's container keywords, defined here once (tests/test_op_literals.py): concat and
# add share their names with the join ops they make, so everywhere else refers to these names.
CONTAINER_KEYS = ("seq", "concat", "add", "mul", "residual")
SEQ, CONCAT, ADD, MUL, RESIDUAL = CONTAINER_KEYS
BRANCHING_CONTAINERS = (CONCAT, ADD, MUL)  # containers of named parallel branches
CONTAINER_OPTIONS = {"add": ("act",), "mul": ("act",), "residual": ("scale", "act", "shortcut")}
PASS_THROUGH = "identity"  # a branch (or shortcut) that is the container's input itself
RESERVED_NAMES = {"input"}
# Variables every expression may use besides parameters (`expand` binds them where the expression
# stands): the input's channels and shape (C, H, W), and a repeat's copy index.  No parameter takes
# these names.
IN, IN_SHAPE, INDEX = "in", "in_shape", "i"
BUILTIN_VARIABLES = (IN, IN_SHAPE, INDEX)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OutputSpec(_Model):
    node: StrictStr = Field(description="name of the layer or block whose value is this output")
    train_only: StrictBool = Field(False, description="exists only in training mode (auxiliary heads)")


class BlockSpec(BaseModel):
    """A reusable template: parameters, optional defaults, and one item as its body."""

    model_config = ConfigDict(extra="allow", frozen=True)
    params: Union[list[StrictStr], dict[StrictStr, Scalar]] = Field(
        default_factory=list, description="parameter names, or a mapping of names to default values"
    )
    defaults: dict[StrictStr, dict[StrictStr, Any]] = Field(default_factory=dict)
    doc: Optional[StrictStr] = None


class Header(_Model):
    archc: Literal[1] = Field(description="format version of the spec language")
    name: StrictStr = Field(pattern=NAME.pattern, description="identifier of the network")
    title: Optional[StrictStr] = None
    paper: Optional[StrictStr] = Field(None, description="citation of the paper the network comes from")
    input: list[Union[StrictInt, StrictStr]] = Field(
        min_length=1, max_length=3, description="one sample's input shape, e.g. [3, 224, 224]"
    )
    params: dict[StrictStr, Scalar] = Field(default_factory=dict, description="named values with defaults")
    defaults: dict[StrictStr, dict[StrictStr, Any]] = Field(default_factory=dict, description="per-op default arguments")
    blocks: dict[StrictStr, BlockSpec] = Field(default_factory=dict, description="reusable parameterised blocks")
    body: Union[dict[StrictStr, Any], list[Any]] = Field(description="the network: a sequence of layers")
    outputs: Optional[dict[StrictStr, Union[StrictStr, OutputSpec]]] = Field(
        None, description="named outputs; default: the last layer of body"
    )
    variants: dict[StrictStr, dict[StrictStr, Scalar]] = Field(
        default_factory=dict, description="named variants of the network (each a model name, e.g. resnet18): "
        "each sets some of the spec's parameters")
    requires: list[StrictStr] = Field(
        default_factory=list, description="plugins (module or archc.ops entry-point names) whose ops the spec "
        "uses; archc checks that they are loaded, and never imports them")


@dataclass
class Block:
    name: str
    params: list[str]
    param_defaults: dict[str, Any]
    defaults: Mapping
    item: Mapping  # the block's body: one item
    loc: Loc
    param_locs: dict[str, Loc] = field(default_factory=dict)


@dataclass
class Spec:
    """A loaded spec: validated header values and the located raw trees."""

    path: str
    tree: Mapping
    name: str
    title: Optional[str]
    paper: Optional[str]
    input: Sequence
    params: dict[str, Any]
    defaults: Mapping
    blocks: dict[str, Block]
    body: Any
    outputs: Optional[Mapping]
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant: Optional[str] = None  # the variant this Spec is (its name is then the variant's)

    def loc(self, *path: Any) -> Loc:
        return locate(self.tree, path, self.tree.loc)


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate the spec at `path`, or the zoo's model of that name (`resnet18`)."""
    text_path = str(path)
    if NAME.match(text_path) and not os.path.lexists(text_path):
        from .zoo import find_model

        return find_model(text_path)
    name, text = load_text(path)
    return parse_spec(text, name)


def parse_spec(text: str, path: str = "<spec>") -> Spec:
    """Validate spec `text` (as read from `path`, for messages)."""
    tree = parse_yaml(text, path)
    header = validate(Header, tree, tree, "spec")
    from .plugins import check_requires

    check_requires(header.requires, tree)
    for key in ("params", "blocks", "defaults"):
        for name in tree.get(key) or {}:
            if not NAME.match(name):
                raise SpecError(f"{shown(name)} is not a valid name in '{key}'", tree[key].key_loc(name),
                                hint="use letters, digits and underscores, not starting with a digit")
    for name in tree.get("params") or {}:
        _not_builtin(name, tree["params"].key_loc(name))
    from .ops import OPS

    for name in header.blocks:
        if name in OPS or name in CONTAINER_KEYS or name in META_KEYS:
            raise SpecError(f"block name '{name}' is taken by the built-in '{name}'", tree["blocks"].key_loc(name),
                            hint="give the block another name")
        if is_module_attribute(name):  # a block used without a layer name gives its name to the module path
            raise SpecError(f"a block cannot be called '{name}': every torch module already has an attribute "
                            "of that name", tree["blocks"].key_loc(name), hint="give the block another name")
    blocks = {name: _block(name, tree["blocks"], spec) for name, spec in header.blocks.items()}
    return Spec(
        path=path, tree=tree, name=header.name, title=header.title, paper=header.paper,
        input=tree["input"], params=dict(header.params), defaults=tree.get("defaults") or _empty(tree),
        blocks=blocks, body=tree["body"], outputs=tree.get("outputs"), variants=_variants(header, tree),
    )


def select_variant(spec: Spec, variant: str) -> Spec:
    """The network variant `variant` of `spec`: its name, and its parameter values as the defaults.

    Overrides (`--set`) still apply on top and are type-checked against them.
    """
    if variant not in spec.variants:
        where = spec.loc("variants") if "variants" in spec.tree else spec.tree.loc
        raise SpecError(f"spec '{spec.name}' has no variant '{shorten(variant)}'", where,
                        hint=did_you_mean(variant, spec.variants) or
                        (f"its variants: {', '.join(spec.variants)}" if spec.variants else "it has no 'variants:'"))
    return replace(spec, name=variant, params={**spec.params, **spec.variants[variant]}, variant=variant)


def _variants(header: Header, tree: Mapping) -> dict[str, dict[str, Any]]:
    """The `variants:` table, each name an identifier and each key a parameter of a fitting type."""
    from .params import same_type

    for name, values in header.variants.items():
        table = tree["variants"]
        if not NAME.match(name):
            raise SpecError(f"{shown(name)} is not a valid variant name", table.key_loc(name),
                            hint="use letters, digits and underscores, not starting with a digit")
        for key, value in values.items():
            if key not in header.params:
                raise SpecError(f"variant '{name}' sets '{shorten(key)}', which is not a parameter of this spec",
                                table[name].key_loc(key), hint=did_you_mean(key, header.params)
                                or "declare it under 'params' with its default")
            default = header.params[key]
            if default is not None and not is_expression(default) and not same_type(default, value):
                raise SpecError(f"variant '{name}': parameter '{key}' has type {type(default).__name__} "
                                f"(default {shown(default)}), got {shown(value)}", table[name].loc_of(key))
    return {name: dict(values) for name, values in header.variants.items()}


def _empty(tree: Mapping) -> Mapping:
    out = Mapping()
    out.loc, out.key_locs, out.value_locs = tree.loc, {}, {}
    return out


def _block(name: str, blocks: Mapping, spec: BlockSpec) -> Block:
    raw: Mapping = blocks[name]
    if not isinstance(raw, Mapping):
        raise SpecError(f"block '{name}' must be a mapping with 'params' and a body", blocks.loc_of(name))
    item = Mapping()
    item.loc, item.key_locs, item.value_locs = raw.loc, {}, {}
    for key, value in raw.items():
        if key not in ("params", "defaults", "doc"):
            item[key], item.key_locs[key], item.value_locs[key] = value, raw.key_loc(key), raw.loc_of(key)
    if not item:
        raise SpecError(f"block '{name}' has no body", blocks.key_loc(name), hint="add one item, e.g. 'concat:' or 'seq:'")
    if isinstance(spec.params, dict):
        params, param_defaults = list(spec.params), dict(spec.params)
        param_locs = {p: raw["params"].key_loc(p) for p in params}
    else:
        params, param_defaults = list(spec.params), {}
        param_locs = {p: raw["params"].loc_of(i) for i, p in enumerate(params)} if "params" in raw else {}
    for p in params:
        if not NAME.match(p):
            raise SpecError(f"{shown(p)} is not a valid parameter name", param_locs.get(p, raw.loc))
        _not_builtin(p, param_locs.get(p, raw.loc))
    if len(set(params)) != len(params):
        raise SpecError(f"block '{name}' lists a parameter twice", raw.loc_of("params"))
    return Block(name, params, param_defaults, raw.get("defaults") or _empty(raw), item, raw.loc, param_locs)


def _not_builtin(name: str, loc: Loc) -> None:
    if name.startswith("__"):  # expr.IN_ALIAS, and room for more
        raise SpecError(f"a parameter name cannot start with '__' ('{shorten(name)}')", loc,
                        hint="give the parameter another name")
    if name in BUILTIN_VARIABLES:
        raise SpecError(f"a parameter cannot be called '{name}': expressions use ${name} for "
                        + {IN: "the input's channel count", IN_SHAPE: "the input's shape",
                           INDEX: "a repeat's copy index"}[name], loc, hint="give the parameter another name")


def validate(model: type[BaseModel], data: Any, tree: Any, what: str, loc: Optional[Loc] = None) -> Any:
    """`model.model_validate(data)`, turning the first error into a located SpecError.

    `tree` is the located YAML the data came from (pydantic's error paths are
    looked up in it); `what` names the thing in the message, e.g. "conv 'conv1'".
    """
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, model, tree, what, loc) from None


def spec_error(exc: ValidationError, model: type[BaseModel], tree: Any, what: str, loc: Optional[Loc]) -> SpecError:
    errors = exc.errors()
    # A key the user wrote that does not exist says most: `kernel_size:` explains the missing `k`,
    # and a misspelt `inptu:` the missing `input`.  Otherwise, a union reports one error per
    # member, and the member that got furthest into the value says what is wrong.
    extras = [e for e in errors if e["type"] == "extra_forbidden"]
    err = extras[0] if extras else max(errors, key=lambda e: len(e["loc"]))
    path = tuple(err["loc"])
    fallback = loc or getattr(tree, "loc", None) or Loc("<spec>", 1, 1)
    field = path[0] if path else None
    if err["type"] == "extra_forbidden":
        key = path[-1]
        path = tuple(p for p in path[:-1] if isinstance(p, int) or _is_user_key(tree, path, p)) + (key,)
        parent = locate(tree, path[:-1], fallback)
        container = _at(tree, path[:-1])
        where = container.key_loc(key) if isinstance(container, Mapping) else parent
        fields = _fields_at(model, path[:-1])
        hint = _torch_name_hint(model, path[:-1], key) or did_you_mean(key, fields)
        return SpecError(f"unknown key {shown(key)} in {what}", where,
                         hint=hint or (f"valid keys: {', '.join(fields)}" if fields else None))
    if err["type"] == "missing":
        return SpecError(f"{what} needs '{'.'.join(map(str, path))}'", locate(tree, path[:-1], fallback))
    # Union members add their type name to the path; the user's key is what matters.
    keys = [p for p in path if isinstance(p, int) or p in _all_field_names(model) or _is_user_key(tree, path, p)]
    where = locate(tree, tuple(keys), fallback)
    message = err["msg"]
    if err["type"] in ("literal_error",) and "expected" in err.get("ctx", {}):
        message = f"expected one of {err['ctx']['expected']}"
    got = err.get("input")
    echo = f" (got {shown(got)})" if not isinstance(got, (dict, list)) and got is not None else ""
    label = ".".join(str(k) for k in keys) or str(field)
    return SpecError(f"{what}: {shown(label)}: {message}{echo}", where)


def _at(tree: Any, path: tuple) -> Any:
    node = tree
    for step in path:
        try:
            node = node[step]
        except (KeyError, IndexError, TypeError):
            return None
    return node


def _is_user_key(tree: Any, path: tuple, key: Any) -> bool:
    prefix = path[: path.index(key)]
    container = _at(tree, prefix)
    return isinstance(container, dict) and key in container


def _all_field_names(model: type[BaseModel]) -> set[str]:
    names: set[str] = set()
    stack = [model]
    while stack:
        m = stack.pop()
        for name, info in m.model_fields.items():
            names.add(name)
            for sub in _models_in(info.annotation):
                if sub not in stack:
                    stack.append(sub)
    return names


def _torch_name_hint(model: type[BaseModel], path: tuple, key: str) -> Optional[str]:
    """"did you mean 'k'?" for `kernel_size`: the argument models list torch's names for their keys."""
    ours = getattr(_model_at(model, path), "torch_names", {}).get(key)
    return f"did you mean '{ours}'? It is archc's name for torch's '{key}'" if ours else None


def _fields_at(model: type[BaseModel], path: tuple) -> list[str]:
    current = _model_at(model, path)
    return sorted(current.model_fields) if current is not None else []


def _model_at(model: type[BaseModel], path: tuple) -> Optional[type[BaseModel]]:
    """The pydantic model that validates the value at `path` below `model`, if one does."""
    current: Optional[type[BaseModel]] = model
    for step in path:
        if current is None or not isinstance(step, str) or step not in current.model_fields:
            return None
        subs = _models_in(current.model_fields[step].annotation)
        current = subs[0] if subs else None
    return current


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    from typing import get_args

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_in(arg))
    return found


SCHEMA_ID = "urn:archc:spec:v1"  # stable: names the language version, not a place


def json_schema(builtin_only: bool = False) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of spec language v1, built from the pydantic models.

    The header comes from `Header`; every op's arguments from its model in the
    op registry (only archc's own ops with `builtin_only`, as in the schema
    file committed to the repository; else plugins' ops too); items are "one
    op, block or container key plus meta keys".  Block names are the spec's
    own, so a block use validates as any key whose value is a list or
    mapping of arguments.  Its `$id` is `SCHEMA_ID`.
    """
    from pydantic.json_schema import models_json_schema

    from .ops import OPS, spec_ops

    names = [n for n in spec_ops() if not builtin_only or OPS[n].origin is None]
    _, top = models_json_schema([(OPS[n].args, "validation") for n in names] + [(Header, "validation")],
                                ref_template="#/$defs/{model}")
    defs = top["$defs"]
    expression = {"type": "string", "pattern": r"^\$", "description": "a $param or ${expression}"}
    for def_name, definition in defs.items():  # any op argument may instead be an expression
        if def_name.endswith("Args"):
            # `defaults:` may supply any argument, so none is required at the point of use.
            definition.pop("required", None)
            for prop, schema in definition.get("properties", {}).items():
                definition["properties"][prop] = {"anyOf": [schema, expression]}
    item_ref = {"$ref": "#/$defs/Item"}
    group = {"anyOf": [item_ref, {"type": "array", "items": item_ref},
                       {"type": "object", "additionalProperties": item_ref}]}
    meta = {
        "from": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 2}],
                 "description": "take input from this earlier layer or block (or 'input'); an op with several "
                                "inputs takes a list of them, in order"},
        "repeat": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\$"}]},
        "when": {"anyOf": [{"type": "boolean"}, {"type": "string", "pattern": r"^\$"}]},
        "names": {"type": "string", "description": "a repeat's copy names, e.g. 'denselayer{i + 1}'"},
    }
    variants = []
    for name in names:
        args = {"anyOf": [{"$ref": f"#/$defs/{OPS[name].args.__name__}"}, {"type": "null"}]}
        variants.append({"type": "object", "required": [name], "properties": {name: args, **meta},
                         "additionalProperties": False, "description": OPS[name].doc})
    variants.append({"type": "string", "enum": names, "description": "an op without arguments"})
    variants.append({"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
                     "description": "a block without arguments"})
    variants.append({"type": "object", "required": ["seq"], "additionalProperties": False,
                     "properties": {"seq": group, **meta}})
    branches = {"type": "object", "additionalProperties": {"anyOf": [group, {"const": PASS_THROUGH}]}}
    variants.append({"type": "object", "required": [CONCAT], "additionalProperties": False,
                     "properties": {CONCAT: branches, **meta}})
    for join in (ADD, MUL):
        variants.append({"type": "object", "required": [join], "additionalProperties": False,
                         "properties": {join: {"anyOf": [branches, {"type": "null"}]},  # null: the join op itself
                                        "act": {"type": ["string", "null"]}, **meta}})
    scale, act, shortcut = CONTAINER_OPTIONS[RESIDUAL]
    variants.append({"type": "object", "required": [RESIDUAL], "additionalProperties": False,
                     "properties": {RESIDUAL: group, scale: {"type": ["number", "string"]},
                                    act: {"type": ["string", "null"]}, shortcut: group, **meta}})
    variants.append({"type": "object", "minProperties": 1, "description": "a block: {BLOCK: [args]} or {BLOCK: {name: value}}",
                     "properties": meta, "additionalProperties": {"type": ["array", "object", "null"]},
                     "propertyNames": {"not": {"enum": [*names, *CONTAINER_KEYS]}}})
    variants.append({"type": "array", "items": item_ref, "description": "a chain with positional names"})
    variants.append({"type": "object", "minProperties": 1, "additionalProperties": item_ref,
                     "propertyNames": {"not": {"enum": [*names, *CONTAINER_KEYS]}},
                     "description": "a chain with the given names"})
    defs["Item"] = {"anyOf": variants}
    header = defs.pop("Header")
    header["properties"]["body"] = {"anyOf": [{"type": "array", "items": item_ref},
                                              {"type": "object", "additionalProperties": item_ref}]}
    header.update({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
                   "title": "archc spec (v1)", "$defs": defs})
    return {"$schema": header.pop("$schema"), "$id": header.pop("$id"), **header}  # the ids first, for readers
