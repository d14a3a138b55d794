"""Record, or compare against, what every spec in specs/ compiles to: the behaviour a refactor must keep.

For each spec (default parameters) it writes into tests/fixtures/golden/NAME/:

- state_dict.txt: every key with its shape and dtype, in order (built on the meta device);
- forward.py: the compiled model's generated forward; standalone.py: `--emit python`'s source;
- summary.json and summary.md: the summary report; paper.json: the papers' table form;
- overview.dot and full.dot: the diagram at depth 1 and every layer;
- with --heavy also logits.json (eval outputs of seed 0 on one seeded input, to 1e-5) and
  onnx.txt (the ONNX export's nodes and initializers).

    .venv/bin/python scripts/golden.py compare            # exit 1 and a diff where anything changed
    .venv/bin/python scripts/golden.py compare --heavy    # with logits and ONNX (minutes)
    .venv/bin/python scripts/golden.py record [--heavy]   # after a change that is meant

tests/test_golden.py runs `compare` without --heavy.  A change that is meant to
alter outputs (a new diagram layout, say) re-records them in the same commit.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"
LIGHT = ("state_dict.txt", "forward.py", "standalone.py", "summary.json", "summary.md", "paper.json",
         "overview.dot", "full.dot")
HEAVY = ("logits.json", "onnx.txt")


def outputs(spec: Path, heavy: bool = False) -> dict[str, str]:
    """Every recorded output of `spec`, by file name."""
    import archcompiler
    from archcompiler import paper, report
    from archcompiler.analysis import analyze
    from archcompiler.draw import render
    from archcompiler.emit import emit_python

    rel = spec.relative_to(ROOT).as_posix()
    graph = archcompiler.compile_graph(spec)
    rep = analyze(graph)
    meta = archcompiler.build(spec, device="meta")
    out = {
        "state_dict.txt": "".join(f"{k} {tuple(v.shape)} {v.dtype}\n" for k, v in meta.state_dict().items()),
        "forward.py": meta.code,
        "standalone.py": emit_python(graph, rel),
        "summary.json": report.to_json(rep),
        "summary.md": report.to_markdown(rep, None, "raw"),
        "overview.dot": render(graph, "dot").decode(),
        "full.dot": render(graph, "dot", None).decode(),
    }
    try:
        out["paper.json"] = paper.to_json(paper.paper_table(graph, rep))
    except archcompiler.UserError as exc:  # a spec without the papers' table form: its message is the output
        out["paper.json"] = str(exc) + "\n"
    if heavy:
        out.update(_heavy(spec, graph))
    return out


def _heavy(spec: Path, graph) -> dict[str, str]:
    import onnx
    import torch

    import archcompiler
    from archcompiler.export import export

    model = archcompiler.build(spec, seed=0).eval()
    x = torch.randn((1, *graph.input_shape), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        result = model(x)
    values = result.values() if isinstance(result, dict) else result if isinstance(result, tuple) else [result]
    logits = [{"shape": list(v.shape), "sum": round(float(v.double().sum()), 4),
               "first": [round(float(t), 5) for t in v.flatten()[:8]]} for v in values]
    proto = onnx.load_from_string(export(model, "onnx"))
    lines = [f"node {n.op_type} {list(n.input)} -> {list(n.output)}" for n in proto.graph.node]
    lines += [f"initializer {i.name} {list(i.dims)}" for i in proto.graph.initializer]
    return {"logits.json": json.dumps(logits, indent=1) + "\n", "onnx.txt": "\n".join(lines) + "\n"}


def specs() -> list[Path]:
    return sorted((ROOT / "specs").glob("*.yaml"))


def compare(heavy: bool = False, only: list[str] | None = None) -> list[str]:
    """A unified diff per output that differs from the recording (empty when all match)."""
    problems = []
    for spec in specs():
        if only and spec.stem not in only:
            continue
        for name, text in outputs(spec, heavy).items():
            path = GOLDEN / spec.stem / name
            if not path.exists():
                problems.append(f"{spec.stem}/{name}: not recorded (run scripts/golden.py record)")
                continue
            old = path.read_text()
            if old != text:
                diff = difflib.unified_diff(old.splitlines(True), text.splitlines(True), f"recorded/{spec.stem}/{name}",
                                            f"now/{spec.stem}/{name}", n=1)
                problems.append("".join(list(diff)[:60]))
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=["record", "compare"])
    parser.add_argument("--heavy", action="store_true", help="also logits and the ONNX export (minutes)")
    parser.add_argument("specs", nargs="*", help="only these specs (names, e.g. googlenet); default: all")
    args = parser.parse_intermixed_args()
    sys.path.insert(0, str(ROOT))
    if args.action == "record":
        for spec in specs():
            if args.specs and spec.stem not in args.specs:
                continue
            folder = GOLDEN / spec.stem
            folder.mkdir(parents=True, exist_ok=True)
            for name, text in outputs(spec, args.heavy).items():
                (folder / name).write_text(text)
            print(f"recorded {folder.relative_to(ROOT)}")
        return 0
    problems = compare(args.heavy, args.specs)
    for problem in problems:
        print(problem)
    print(f"{len(problems)} outputs differ from the recording" if problems else "every output equals the recording")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
