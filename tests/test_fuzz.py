"""Mutants of every zoo spec keep the error contract (see tests/fuzzing.py for the mutations and the contract).

A bounded budget for the suite (ARCHC_FUZZ_EXAMPLES, default 100) with a fixed
seed, so CI is repeatable; scripts/fuzz.py runs long random campaigns with the
same mutations and checks.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzzing import contract_problems, mutate, position_inside

ROOT = Path(__file__).parents[1]
SPECS = sorted((ROOT / "specs").glob("*.yaml"))
TEXTS = [p.read_text() for p in SPECS]


@settings(max_examples=int(os.environ.get("ARCHC_FUZZ_EXAMPLES", "100")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck), database=None)
@given(index=st.integers(0, len(SPECS) - 1), rng=st.randoms(use_true_random=False))
def test_mutants_of_the_zoo_keep_the_error_contract(tmp_path_factory, index, rng):
    path = tmp_path_factory.mktemp("mutant") / SPECS[index].name
    path.write_bytes(mutate(TEXTS[index], rng, TEXTS).encode("utf-8", errors="surrogatepass"))
    assert contract_problems(path) == []


def test_the_unmutated_zoo_passes_the_contract_checker():
    for path in SPECS:
        assert contract_problems(path) == [], path


def test_position_inside_counts_lines_as_yaml_does():
    text = "a: 1\rb: 2\u2028c: 3\r\nd"
    assert position_inside(text, 4, 2) and not position_inside(text, 5, 1)
    assert position_inside(text, 3, 5) and not position_inside(text, 3, 6)


def test_the_checker_catches_each_way_of_breaking_the_contract(monkeypatch, tmp_path):
    import time

    import archcompiler
    from archcompiler import SpecError
    from archcompiler.errors import Loc

    import fuzzing

    path = tmp_path / "net.yaml"
    path.write_text(TEXTS[0])

    def fails_with(fault):
        monkeypatch.setattr(archcompiler, "compile_graph", fault)
        return contract_problems(path, ("check",))

    def crash(*a, **k):
        raise ValueError("boom")

    def outside(*a, **k):
        raise SpecError("far away", Loc(str(path), 10_000, 1))

    def hang(*a, **k):
        time.sleep(5)

    def hog(*a, **k):
        return bytearray(4 * fuzzing.MEMORY)

    assert "exit 1" in fails_with(crash)[0]
    assert "lies outside the file" in fails_with(outside)[0]
    assert "exit 1" in fails_with(hog)[0]  # a MemoryError within the bound, not the machine swapping
    monkeypatch.setattr(fuzzing, "SECONDS", 0.5)
    assert "still running" in fails_with(hang)[0]
