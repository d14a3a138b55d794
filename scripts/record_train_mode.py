"""Record the references' seeded train-mode outputs into tests/fixtures/train_mode/ (NAME.pt).

Run with a Python that has torchvision (never in CI):

    /work/tvenv/bin/python scripts/record_train_mode.py [googlenet inception_v3]

Each network is the reference constructor of its facts (tests/fixtures/reference/NAME.json), filled by
the deterministic rule of tests/reference.py, in training mode (dropout on, BatchNorm on batch
statistics), run once on the facts' input after `torch.manual_seed(SEED)`.  The file holds every
output by name (the main logits and the auxiliary heads'), float32, and the versions that made them.
tests/test_train_mode.py compares archc's model, filled and seeded the same, against it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import torch  # noqa: E402
import torchvision  # noqa: E402

import reference  # noqa: E402

SEED = 0
OUT = ROOT / "tests" / "fixtures" / "train_mode"
BUILD = {
    "googlenet": lambda: torchvision.models.googlenet(weights=None, aux_logits=True, transform_input=False,
                                                      init_weights=False),
    "inception_v3": lambda: torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False,
                                                            init_weights=False),
}
NAMES = {"googlenet": ("logits", "aux2", "aux1"), "inception_v3": ("logits", "aux_logits")}


def record(name: str) -> Path:
    model = BUILD[name]()
    reference.fill(model)
    model.train()
    torch.manual_seed(SEED)
    out = model(reference.reference_input(name))
    values = dict(zip(NAMES[name], (out.logits, *out[1:]) if name == "googlenet" else (out.logits, out.aux_logits)))
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.pt"
    torch.save({"outputs": {k: v.detach().clone() for k, v in values.items()}, "seed": SEED,
                "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}, path)
    return path


if __name__ == "__main__":
    torch.set_num_threads(1)
    for name in sys.argv[1:] or list(BUILD):
        print(record(name))
