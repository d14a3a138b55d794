"""Activations, each also an op of its own (they also follow conv, linear, subsample and joins as `act`)."""

from __future__ import annotations

import math

from .registry import (
    ACTIVATION_SAVES,
    ACTIVATIONS,
    INPLACE_ACTIVATIONS,
    Autograd,
    Costs,
    Lowering,
    NoArgs,
    OpDef,
    RunsAs,
    Saved,
    Saves,
    Shape,
    act_costs,
    act_module,
    register,
)

# relu, sigmoid and tanh read only their result in backward; the others also (or only) read their input.
_RESULT_ONLY = frozenset({"relu", "sigmoid", "tanh"})


def _lowering(name: str):  # type: ignore[no-untyped-def]
    inplace = INPLACE_ACTIVATIONS.get(name)
    over = {0: inplace.format("{0}")} if inplace else {}
    return lambda a, s: Lowering(act_module(name), overwrite=over)


def _saves(name: str):  # type: ignore[no-untyped-def]
    def saves(a: NoArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Saves:
        # written into its input (runs.into) it runs in place: its result is the input's memory
        kept = ACTIVATION_SAVES[name][runs.into is not None]
        tensor = Saved(0) if kept == "input" else Saved("output") if kept == "output" else Saved(None, out)
        return Saves((tensor,), view=runs.into)

    return saves


def _costs(name: str):  # type: ignore[no-untyped-def]
    def costs(a: NoArgs, shapes: list[Shape], out: Shape, runs: RunsAs) -> Costs:
        # its module, unless written into its input, which runs its in-place functional form instead
        kinds, ptflops = act_costs(name, math.prod(out), as_module=runs.into is None)
        return Costs(kinds, {"ptflops": ptflops})

    return costs


for _name in ACTIVATIONS:
    register(OpDef(_name, NoArgs, "act", lambda a, s: s[0], lowering=_lowering(_name), saves=_saves(_name),
                   costs=_costs(_name),
                   autograd=Autograd(reads_inputs=_name not in _RESULT_ONLY, reads_output=lambda a: True, fresh=True),
                   doc=f"The {_name} activation."))
