"""Activations, each also an op of its own (they also follow conv, linear, subsample and joins as `act`)."""

from __future__ import annotations

from .registry import ACTIVATIONS, NoArgs, OpDef, act_module, register, simple

for _name in ACTIVATIONS:
    register(OpDef(_name, NoArgs, "act", lambda a, s: s[0], lowering=simple(act_module(_name)),
                   doc=f"The {_name} activation."))
