"""Every spec compiles to exactly what was recorded in tests/fixtures/golden/ (see scripts/golden.py).

State_dict layouts, the generated forward, the standalone source, summaries,
the papers' table form and the diagrams' DOT: a refactor keeps them all.  A
change meant to alter them re-records with `scripts/golden.py record`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import golden  # noqa: E402


@pytest.mark.parametrize("spec", golden.specs(), ids=[p.stem for p in golden.specs()])
def test_outputs_equal_the_recording(spec):
    problems = golden.compare(only=[spec.stem])
    assert not problems, "\n".join(problems)


def test_every_spec_and_output_is_recorded():
    for spec in golden.specs():
        recorded = {p.name for p in (golden.GOLDEN / spec.stem).iterdir()}
        assert set(golden.LIGHT) <= recorded, spec.stem
