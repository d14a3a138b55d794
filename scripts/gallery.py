"""Regenerate docs/gallery.md and its pictures: every spec's overview on one A4 page, and every module.

    .venv/bin/python scripts/gallery.py            # all specs, into docs/
    .venv/bin/python scripts/gallery.py --only lenet5 --out /tmp/g --format png

The pictures are what `archc draw SPEC --page A4` and `archc draw SPEC
--block NAME` give; this script only chooses which blocks to show (every
module: a block with layers of its own, not a stage made only of other
blocks, whose picture is the overview's) and writes the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import archcompiler  # noqa: E402
from archcompiler.artifacts import write_file  # noqa: E402
from archcompiler.draw import block_instance, render  # noqa: E402

# The module each Inception network is known for, drawn the way its paper draws it.
BLOCK_FIGURES = {
    "googlenet_paper": ("inception", "figure 2(b) of the GoogLeNet paper"),
    "googlenet": ("inception", "torchvision's version: a 3x3 where the paper has a 5x5"),
    "bn_inception": ("inception", "figure 5's module: the 5x5 replaced by two 3x3"),
    "inception_v2": ("inception_17", "figure 6 of Rethinking the Inception Architecture, n = 7"),
    "inception_v3": ("inception_e", "figure 7 of Rethinking the Inception Architecture"),
    "inception_v4": ("inception_c", "figure 6 of the Inception-v4 paper"),
    "inception_resnet_v1": ("block17", "figure 11 of the Inception-v4 paper (Inception-ResNet-B)"),
    "inception_resnet_v2": ("block35", "figure 16 of the Inception-v4 paper (Inception-ResNet-A)"),
}


def is_stage(graph, block: str) -> bool:
    """Whether every layer of every instance of `block` sits in a block nested in it (a stage of ResNet or
    EfficientNet, MobileNetV3's feature extractor): the overview shows those, one box per nested block."""
    for scope in (s for s in graph.scopes.values() if s.block == block):
        for node_id in scope.nodes:
            innermost = [s for s in graph.nodes[node_id].scopes if graph.scopes[s].block][-1]
            if innermost == scope.id:
                return False
    return True


def module_figures(stem: str, graph) -> list[str]:
    """The blocks drawn on their own for a spec: every module in use, the paper's known figure first."""
    used = [b for b in dict.fromkeys(s.block for s in graph.scopes.values() if s.block) if not is_stage(graph, b)]
    known = BLOCK_FIGURES.get(stem, (None,))[0]
    return ([known] if known in used else []) + [b for b in used if b != known]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", help="draw only this spec (repeatable)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where gallery.md and gallery/ go")
    parser.add_argument("--format", default="svg", choices=("svg", "png"), help="picture format (default svg)")
    args = parser.parse_args(argv)

    specs = sorted((ROOT / "specs").glob("*.yaml"))
    if args.only:
        specs = [p for p in specs if p.stem in args.only]
        missing = set(args.only) - {p.stem for p in specs}
        if missing:
            parser.error(f"no spec named {', '.join(sorted(missing))} in specs/")
    pictures = args.out / "gallery"
    pictures.mkdir(parents=True, exist_ok=True)
    lines = ["# Gallery", "",
             "Every spec in `specs/` as `archc draw SPEC --page A4` draws it: one box per block instance or",
             "repeat, each with its output shape (CxHxW, as in `archc summary`), all text 8 pt, wrapped into",
             "as many columns as it takes to fit one A4 page at its natural size. Below each, every module",
             "of the spec on its own, as `archc draw SPEC --block NAME` draws it: the instance with the most",
             "layers, so that optional parts and the residual are drawn. A block made only of other blocks",
             "(a stage) is not shown on its own: the overview shows it, a box per block.",
             "Regenerate with `python scripts/gallery.py`.", ""]
    for number, spec in enumerate(specs, 1):
        graph = archcompiler.compile_graph(spec)
        print(f"[{number}/{len(specs)}] {spec.stem}", file=sys.stderr)
        overview = pictures / f"{spec.stem}.{args.format}"
        write_file(overview, render(graph, args.format, page="A4"))
        lines += [f"## {graph.title or graph.name}", "", f"`specs/{spec.name}`: {graph.paper}", "",
                  f"![{spec.stem}](gallery/{overview.name})", ""]
        for block in module_figures(spec.stem, graph):
            drawn = block_instance(graph, block).id
            caption = BLOCK_FIGURES[spec.stem][1] if BLOCK_FIGURES.get(spec.stem, ("",))[0] == block else \
                f"the `{block}` module"
            caption += f", drawn as `{drawn}`"
            figure = pictures / f"{spec.stem}.{block}.{args.format}"
            write_file(figure, render(graph, args.format, block=block))
            lines += [f"`archc draw specs/{spec.name} --block {block}`: {caption}.", "",
                      f"![{spec.stem} {block}](gallery/{figure.name})", ""]
    write_file(args.out / "gallery.md", "\n".join(lines).encode())
    print(f"wrote {args.out / 'gallery.md'} and {len(list(pictures.iterdir()))} pictures in {pictures}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
