"""Record torchvision's eval logits in float64 under the test fill: tests/fixtures/reference/modern/float64.json.

Run with a Python that has torchvision 0.29.1 (never in CI or the tests; see benchmarks/README.md):

    /work/tvenv/bin/python scripts/record_reference_float64.py              # every model with modern facts
    /work/tvenv/bin/python scripts/record_reference_float64.py efficientnet_v2_s regnet_y_1_6gf

Why: under the deterministic fill a few networks (efficientnet_v2_s, regnet_y_1_6gf) amplify float32
rounding so much that torchvision itself does not reproduce its recorded float32 logits to 1e-4 on
another thread count, so the tests compare in float64.  Even float64 is not enough on its own: MKL
picks its dgemm kernel by CPU, and on efficientnet_v2_s (logits near 1e5) torchvision's own float64
logits from an AVX-512 Intel Xeon and from an AMD EPYC differ by 1.9e-6, relative.  So both this script
and the tests (tests/conftest.py) run MKL in its reproducible mode, MKL_CBWR=COMPATIBLE, which gives
the same kernels, hence the same sums, on every x86 CPU.
The weights, the input and the model are the facts' own: the fill of tests/reference.py, by key.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

os.environ["MKL_CBWR"] = "COMPATIBLE"  # read once, when MKL starts: before torch is imported

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
import torchvision  # noqa: E402

from reference import fill_tensor, hash_uniform  # noqa: E402

MODERN = ROOT / "tests" / "fixtures" / "reference" / "modern"
OUT = MODERN / "float64.json"


def logits64(name: str) -> list[list[float]]:
    facts = json.loads((MODERN / f"{name}.json").read_text())
    model = torchvision.models.get_model(name, weights=None).eval()
    state = {k: fill_tensor(k, tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)
    model = model.double()
    shape = facts["input_shape"]
    x = hash_uniform(math.prod(shape), facts["input_seed"]).reshape(shape).to(torch.float32).double()
    with torch.no_grad():
        return [[round(v, 9) for v in row] for row in model(x).tolist()]


def main() -> None:
    names = sys.argv[1:] or sorted(p.name[: -len(".keys.tsv")] for p in MODERN.glob("*.keys.tsv"))
    recorded = json.loads(OUT.read_text()) if OUT.exists() else {}
    recorded["about"] = (f"eval logits in float64 under the fill, torchvision {torchvision.__version__}, "
                         f"torch {torch.__version__}, MKL_CBWR=COMPATIBLE; scripts/record_reference_float64.py")
    for name in names:
        recorded[name] = logits64(name)
        print(name, flush=True)
        OUT.write_text(json.dumps(recorded, indent=0) + "\n")


if __name__ == "__main__":
    main()
