"""Check zoo models against their reference facts, and say what differs: the tool for writing a spec.

    .venv/bin/python scripts/zoo_check.py resnet18 resnet34        # keys, shapes, dtypes, counts (meta device)
    .venv/bin/python scripts/zoo_check.py --logits resnet18         # and the eval logits under the fill
    .venv/bin/python scripts/zoo_check.py --family resnet.yaml     # every variant of a spec file

Facts come from tests/fixtures/reference/ and its modern/ folder, read by tests/reference.py (see the READMEs); the
tests (tests/test_zoo_modern.py) assert the same things, this prints the first difference instead.
Every model is built at 3x224x224, as the facts were recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402

import archcompiler  # noqa: E402
from archcompiler import zoo  # noqa: E402

from reference import facts as read_facts  # noqa: E402
from reference import fresh_reference_state, keys, reference_input, relative_error  # noqa: E402


def check(name: str, logits: bool) -> bool:
    try:
        facts, expected = read_facts(name), keys(name)
    except FileNotFoundError:
        print(f"{name}: no reference facts")
        return False
    shape = tuple(facts["input_shape"][1:])
    try:
        model = archcompiler.build(name, device="meta", input_shape=shape)
    except archcompiler.UserError as exc:
        print(f"{name}: {exc}")
        return False
    ours = [(k, tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    ok = True
    if ours != expected:
        ok = False
        for i, (a, b) in enumerate(zip(ours, expected)):
            if a != b:
                print(f"{name}: entry {i}: ours {a}, reference {b}")
                break
        else:
            print(f"{name}: {len(ours)} entries, reference {len(expected)}; next: "
                  f"{(ours + expected)[min(len(ours), len(expected))]}")
    params = sum(p.numel() for p in model.parameters())
    static = archcompiler.summary(name).total_params
    if params != facts["params_total"] or static != params:
        ok = False
        print(f"{name}: params compiled {params:,}, static {static:,}, reference {facts['params_total']:,}")
    if ok and logits:
        model = archcompiler.build(name, input_shape=shape)
        model.load_state_dict(fresh_reference_state(name), strict=True)
        model.eval()
        with torch.no_grad():
            out = model(reference_input(name))
        out = out if isinstance(out, torch.Tensor) else next(iter(out.values()))
        ref = torch.tensor(facts["logits"])
        err = relative_error(out, ref)
        ok = err < 1e-4
        print(f"{name}: logits relative error {err:.2e}" + ("" if ok else "  <-- over 1e-4"))
    if ok:
        print(f"{name}: ok ({len(ours)} entries, {params:,} params)")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", help="model names (see `archc list`)")
    parser.add_argument("--family", action="append", default=[], help="a spec file in specs/: all its variants")
    parser.add_argument("--logits", action="store_true", help="also compare the eval logits (CPU; slow for big nets)")
    args = parser.parse_args()
    names = list(args.names)
    for family in args.family:
        names += [m.name for m in zoo.models().values() if m.path.name == Path(family).name]
    if not names:
        parser.error("name at least one model or --family")
    results = [check(n, args.logits) for n in names]
    print(f"{sum(results)}/{len(results)} ok")
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
