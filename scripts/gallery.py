"""Regenerate docs/gallery.md and its pictures: every spec's overview, and every module of the paper families.

    .venv/bin/python scripts/gallery.py            # all specs, into docs/
    .venv/bin/python scripts/gallery.py --only lenet5 --out /tmp/g --format png

The pictures are what `archc draw SPEC` and `archc draw SPEC --block NAME`
give; this script only chooses which block to show and writes the page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import archcompiler  # noqa: E402
from archcompiler.artifacts import write_file  # noqa: E402
from archcompiler.draw import render  # noqa: E402

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


# The families whose every module is shown on its own, as its paper draws it.
MODULE_FAMILIES = ("inception", "googlenet", "resnet", "mobilenet")


def module_figures(stem: str, graph) -> list[str]:
    """The blocks drawn on their own for a spec: every block of the families above, the known figure first."""
    if not any(family in stem for family in MODULE_FAMILIES):
        return [BLOCK_FIGURES[stem][0]] if stem in BLOCK_FIGURES else []
    used = list(dict.fromkeys(s.block for s in graph.scopes.values() if s.block))
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
             "Every spec in `specs/` as `archc draw SPEC` draws it (one box per block instance or repeat,",
             "tensor shapes on the edges, CxHxW as in `archc summary`), and every module of the Inception,",
             "Inception-ResNet, ResNet and MobileNet networks on its own, as `archc draw SPEC --block NAME`",
             "draws it. Regenerate with `python scripts/gallery.py`.", ""]
    for number, spec in enumerate(specs, 1):
        graph = archcompiler.compile_graph(spec)
        print(f"[{number}/{len(specs)}] {spec.stem}", file=sys.stderr)
        overview = pictures / f"{spec.stem}.{args.format}"
        write_file(overview, render(graph, args.format))
        lines += [f"## {graph.title or graph.name}", "", f"`specs/{spec.name}`: {graph.paper}", "",
                  f"![{spec.stem}](gallery/{overview.name})", ""]
        for block in module_figures(spec.stem, graph):
            caption = BLOCK_FIGURES[spec.stem][1] if BLOCK_FIGURES.get(spec.stem, ("",))[0] == block else \
                f"the `{block}` module"
            figure = pictures / f"{spec.stem}.{block}.{args.format}"
            write_file(figure, render(graph, args.format, block=block))
            lines += [f"`archc draw specs/{spec.name} --block {block}`: {caption}.", "",
                      f"![{spec.stem} {block}](gallery/{figure.name})", ""]
    write_file(args.out / "gallery.md", "\n".join(lines).encode())
    print(f"wrote {args.out / 'gallery.md'} and {len(list(pictures.iterdir()))} pictures in {pictures}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
