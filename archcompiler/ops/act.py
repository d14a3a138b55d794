"""Activations, each also an op of its own (they also follow conv, linear, subsample and joins as `act`)."""

from __future__ import annotations

from .registry import ACTIVATIONS, INPLACE_ACTIVATIONS, Autograd, Lowering, NoArgs, OpDef, act_module, register

# relu, sigmoid and tanh read only their result in backward; the others also (or only) read their input.
_RESULT_ONLY = frozenset({"relu", "sigmoid", "tanh"})


def _lowering(name: str):  # type: ignore[no-untyped-def]
    inplace = INPLACE_ACTIVATIONS.get(name)
    over = {0: inplace.format("{0}")} if inplace else {}
    return lambda a, s: Lowering(act_module(name), overwrite=over)


for _name in ACTIVATIONS:
    register(OpDef(_name, NoArgs, "act", lambda a, s: s[0], lowering=_lowering(_name),
                   autograd=Autograd(reads_inputs=_name not in _RESULT_ONLY, reads_output=lambda a: True, fresh=True),
                   doc=f"The {_name} activation."))
