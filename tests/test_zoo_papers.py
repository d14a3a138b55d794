"""The specs written after a paper reproduce that paper's own figures.

Each figure below is read off the paper (or the seed document the issue
names); the spec is compiled and analysed, and the computed numbers must
equal them.
"""

from __future__ import annotations

from pathlib import Path

import archcompiler

SPECS = Path(__file__).parents[1] / "specs"


def rows(spec: str, **params):
    report = archcompiler.summary(SPECS / f"{spec}.yaml", **params)
    return report, {r.name: r for r in report.rows}


# ---------------------------------------------------------------------------
# LeNet-5 (LeCun et al. 1998, section II.B; seed 001)


def test_lenet5_parameters_per_layer_and_total():
    report, row = rows("lenet5")
    assert {n: row[n].params for n in ("C1", "S2", "C3", "S4", "C5", "F6", "output")} == {
        "C1": 156, "S2": 12, "C3": 1_516, "S4": 32, "C5": 48_120, "F6": 10_164, "output": 0,
    }
    assert report.total_params == 60_000
    assert row["output"].buffers == 10 * 84  # the fixed prototypes


def test_lenet5_feature_map_sizes():
    _, row = rows("lenet5")
    assert {n: row[n].output_shape for n in ("C1", "S2", "C3", "S4", "C5", "F6", "output")} == {
        "C1": (6, 28, 28), "S2": (6, 14, 14), "C3": (16, 10, 10), "S4": (16, 5, 5),
        "C5": (120, 1, 1), "F6": (84,), "output": (10,),
    }


def test_lenet5_connections_equal_the_papers():
    # The paper counts connections with the bias: multiply-adds plus one per output unit.
    _, row = rows("lenet5")
    connections = {n: row[n].macs + row[n].activations for n in ("C1", "C3", "C5", "F6")}
    assert connections == {"C1": 122_304, "C3": 151_600, "C5": 48_120, "F6": 10_164}
