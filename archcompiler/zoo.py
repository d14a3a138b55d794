"""The zoo: model names -> specs (`archcompiler.build("resnet18")`, `archc summary resnet18`).

In: a model name.  Out: the `Spec` of that network, loaded from the spec
files shipped in `archcompiler/specs/` (the repository's `specs/`), with
its variant selected.  A spec file names one network (its `name`) or, with a
`variants:` table, a family of them; every variant is a model name of its
own (the family's own name is not: `archc build specs/resnet.yaml` builds
its default parameters, by path).  A
name given both by a spec file of its own and by a family's variant
(`resnet50`, `vgg16`) is the spec file's: the zoo's older, annotated spec
stays what the name means, and the tests prove the two equal.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import Loc, SpecError, did_you_mean, shorten
from .spec import Spec, load_spec, select_variant

ZOO = Path(__file__).parent / "specs"


@dataclass(frozen=True)
class Model:
    """One name of the zoo: the spec file it comes from and, for a family, the variant it selects."""

    name: str
    path: Path
    variant: Optional[str] = None


@functools.lru_cache(maxsize=None)
def _index() -> dict[str, Model]:
    files = sorted(ZOO.glob("*.yaml"))
    specs = [(path, load_spec(path)) for path in files]
    index: dict[str, Model] = {}
    for path, spec in specs:  # the spec files' own names first: they win over variants
        if not spec.variants:
            index[spec.name] = Model(spec.name, path)
    for path, spec in specs:
        for variant in spec.variants:
            index.setdefault(variant, Model(variant, path, variant))
    return dict(sorted(index.items()))


def models() -> dict[str, Model]:
    """Every model name of the zoo and where it comes from, sorted by name."""
    return _index()


def list_models() -> list[str]:
    """Every model name the zoo knows (specs and their variants), sorted: `build(name)` takes any of them."""
    return list(_index())


@dataclass(frozen=True)
class Row:
    """One model's line of the zoo's tables (`archc list`, docs/zoo.md): computed from its spec, no torch."""

    name: str
    path: Path  # the spec file
    paper: str  # the spec's `paper`, as written ("" when it has none)
    input: tuple[int, ...]  # its native input (C, H, W)
    params: int  # trainable parameters
    macs: int  # multiply-accumulates of one sample at that input, eval mode (analysis.py's convention)


def rows() -> list[Row]:
    """A `Row` for every model name, in `list_models()` order."""
    from .analysis import analyze
    from .expand import expand
    from .shapes import infer_shapes

    out = []
    for name, model in _index().items():
        spec = find_model(name)
        graph = infer_shapes(expand(spec))
        report = analyze(graph)
        out.append(Row(name, model.path, spec.paper or "", graph.input_shape, report.total_params, report.total_macs))
    return out


def find_model(name: str) -> Spec:
    """The spec of the zoo's model `name`, its variant selected; a `SpecError` for an unknown name."""
    model = _index().get(name)
    if model is None:
        raise SpecError(f"no spec file or zoo model named '{shorten(name)}'", Loc(name, 1, 1),
                        hint=did_you_mean(name, _index()) or "give a path to a YAML file, or see `archc list`")
    spec = load_spec(model.path)
    return select_variant(spec, model.variant) if model.variant is not None else spec
