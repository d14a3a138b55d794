"""graph: the names a layer cannot take, because every torch module already has them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn

import archcompiler
from archcompiler import SpecError
from archcompiler.graph import MODULE_ATTRIBUTES, is_module_attribute

from conftest import make_spec

ROOT = Path(__file__).parents[1]


def test_the_list_covers_every_attribute_of_torch_modules_and_the_compiled_model():
    import torch

    model = archcompiler.build(ROOT / "specs" / "lenet5.yaml")
    torch.compile(model)  # compiling adds attributes to nn.Module itself (not run: compiling is lazy)
    for obj in (nn.Module(), model):
        missing = {n for n in dir(obj) if not is_module_attribute(n)}
        # The compiled model's own submodules are attributes too, but they are the spec's layers.
        missing -= set(model._modules) if obj is model else set()
        assert not missing, f"add these to graph.MODULE_ATTRIBUTES: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(n for n in MODULE_ATTRIBUTES if n.isidentifier()))
def test_a_layer_named_like_a_module_attribute_is_refused_at_its_name(name):
    with pytest.raises(SpecError) as info:
        archcompiler.compile_graph(make_spec(f"mixed:\n  seq:\n    {name}: {{conv: {{out: 3, k: 1}}}}"))
    assert info.value.message.startswith(f"a layer cannot be called '{name}'")
    assert (info.value.line, info.value.column) == (7, 7)


def test_dunder_names_are_refused_and_ordinary_names_are_not():
    assert is_module_attribute("__init__") and is_module_attribute("__weird__")
    assert is_module_attribute("___needs_generation_tag_patch")  # torch.compile adds it to nn.Module
    assert not any(map(is_module_attribute, ["conv", "fc", "features", "layer1", "head", "_x", "add"]))


def test_each_refused_name_would_really_break_the_build():
    # Not a guess: torch itself refuses a submodule of each such name.
    for name in ("forward", "training", "to", "state_dict", "_modules"):
        with pytest.raises(KeyError):
            nn.Module().add_module(name, nn.Identity())


def test_frozen_makes_what_the_constructor_makes():
    # `graph.frozen` skips a frozen dataclass's generated __init__: the instance must be the same one,
    # equal, hashing alike, printing alike, and still frozen.
    import dataclasses

    from archcompiler.analysis import Row
    from archcompiler.errors import Loc
    from archcompiler.graph import Layer, Node, frozen

    values = dict(id="a.0", op="relu", args=None, inputs=["input"], loc=Loc("x.yaml", 3, 5), scopes=("a",),
                  train_only=True, exprs={("out",): "$c"}, inputs_loc=None)
    made, built = frozen(Layer, values), Layer(**values)
    assert made == built and repr(made) == repr(built) and dataclasses.asdict(made) == dataclasses.asdict(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.op = "conv"  # type: ignore[misc]
    assert Node.shaped(made, (3, 4, 4)) == Node(**values, shape=(3, 4, 4))
    row = dict(name="a", kind="layer", op="conv", label="conv 3x3", depth=1, output_shape=(8, 4, 4), params=1,
               buffers=2, macs=3, activations=4, train_only=False, rf=(3, 3), jump=(1, 1), kernel=(3, 3))
    assert frozen(Row, row) == Row(**row) and hash(frozen(Row, row)) == hash(Row(**row))
