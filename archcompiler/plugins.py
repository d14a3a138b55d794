"""Users' own ops: `register_op`, and loading the modules that call it.

A plugin is an importable Python module that calls `register_op(OpDef(...))`
for each op it adds (docs/extending.md walks through one).  archc imports
plugins, never a spec: a spec may only say which ones it needs
(`requires: [NAME]`), and gets a located error when one is not loaded.

Three ways to load plugins, all handled by `load_plugins` (which the `archc`
command calls before every command):

- installed packages that declare an entry point in the `archc.ops` group
  (`[project.entry-points."archc.ops"] NAME = "MODULE"`);
- the `ARCHC_PLUGINS` environment variable, comma-separated module names;
- `archc --plugin MODULE` (repeatable), or `load_plugins(["MODULE"])` from Python.

A plugin that fails to import is a `PluginError` (one line, exit 2 on the
command line) naming the plugin and the exception; the ops it registered
before failing are removed again.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import os
import sys
from typing import Iterable, Optional

from .errors import UserError
from .ops import OPS, OpDef, register

GROUP = "archc.ops"
ENV = "ARCHC_PLUGINS"

# Names under which plugins were loaded: module names, and entry-point names.
_loaded: set[str] = set()


class PluginError(UserError):
    """A plugin that cannot be registered or loaded."""


def _origin_text(origin: Optional[str]) -> str:
    return "archc (a built-in op)" if origin is None else f"plugin '{origin}'"


def _reserved() -> set[str]:
    from .spec import CONTAINER_KEYS, META_KEYS

    return {*CONTAINER_KEYS, *META_KEYS}


def register_op(op: OpDef, *, origin: Optional[str] = None) -> OpDef:
    """Add a user's op to the registry, for every stage and command; returns the registered `OpDef`.

    `origin` is the importable module that defines the op (default: the calling
    module); `archc build --emit python` writes `import ORIGIN` into a file that
    uses the op.  Refused with a `PluginError`: a name that is not an identifier,
    a spec keyword (seq, concat, add, residual, from, repeat, when), or an op
    registered already (the message names both origins).
    """
    if not isinstance(op, OpDef):
        raise PluginError(f"register_op takes an archcompiler.ops.OpDef, got {type(op).__name__}")
    if origin is None:
        origin = sys._getframe(1).f_globals.get("__name__")
    from .spec import NAME

    name = op.name
    if not isinstance(name, str) or not NAME.match(name):
        raise PluginError(f"{_origin_text(origin)} registers an op named {name!r}, which is not an identifier",
                          hint="use letters, digits and underscores, not starting with a digit")
    if name in _reserved():
        raise PluginError(f"{_origin_text(origin)} registers an op named '{name}', which is a spec keyword",
                          hint="keywords: " + ", ".join(sorted(_reserved())))
    if name in OPS:
        raise PluginError(f"op '{name}' from {_origin_text(origin)} is registered already, "
                          f"by {_origin_text(OPS[name].origin)}", hint="give the op another name")
    op = dataclasses.replace(op, origin=origin)
    register(op)
    return op


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=GROUP), key=lambda ep: ep.name)


def _import(name: str, what: str, ep: Optional[importlib.metadata.EntryPoint] = None) -> None:
    before = set(OPS)
    try:
        if ep is not None:
            ep.load()
        else:
            importlib.import_module(name)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure of the user's code is one line
        for added in set(OPS) - before:  # nothing half-registered stays behind
            del OPS[added]
        reason = exc.message if isinstance(exc, UserError) else f"{type(exc).__name__}: {exc}"
        raise PluginError(f"plugin '{name}' ({what}) failed to load: {reason}") from None
    _loaded.add(name)
    if ep is not None:
        _loaded.add(ep.value.partition(":")[0].strip())


def _env_plugins() -> list[str]:
    return [name.strip() for name in os.environ.get(ENV, "").split(",") if name.strip()]


def load_plugins(modules: Iterable[str] = (), *, installed: bool = True, environment: bool = True) -> None:
    """What `archc` does before every command: load installed plugins, `ARCHC_PLUGINS`, then `modules`.

    `installed`: every entry point in the `archc.ops` group; `environment`: the
    modules named in `ARCHC_PLUGINS`.  Each is imported once per process.
    """
    if installed:
        for ep in _entry_points():
            if ep.name not in _loaded:
                _import(ep.name, f"entry point in '{GROUP}' of {_distribution(ep)}", ep)
    if environment:
        for name in _env_plugins():
            if name not in _loaded:
                _import(name, ENV)
    for name in modules:
        name = name.strip()
        if name and name not in _loaded:
            _import(name, "--plugin")


def _distribution(ep: importlib.metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"package '{dist.name}'" if dist is not None else "an installed package"


def loaded() -> set[str]:
    """Names a spec's `requires:` accepts now: loaded modules and entry points, and every op's module."""
    names = set(_loaded) | {op.origin for op in OPS.values() if op.origin}
    for ep in _entry_points():  # an entry point whose module was imported some other way
        if ep.value.partition(":")[0].strip() in names:
            names.add(ep.name)
    return names


def check_requires(requires: Optional[list], tree: object) -> None:
    """A located `SpecError` for the first plugin a spec requires that is not loaded."""
    from .errors import SpecError
    from .source import loc_of

    if not requires:
        return
    have = loaded()
    seq = tree.get("requires") if hasattr(tree, "get") else None  # type: ignore[union-attr]
    for i, name in enumerate(requires):
        if name not in have:
            raise SpecError(f"requires plugin '{name}', which is not loaded", loc_of(seq, i, tree.loc),  # type: ignore[attr-defined]
                            hint=f"load it with --plugin {name}, or ARCHC_PLUGINS={name}, or install the package "
                                 f"that provides the '{GROUP}' entry point '{name}'")
