"""Long fuzzing campaigns: mutants of every zoo spec against the error contract.

The mutations and the contract are the suite's own (tests/fuzzing.py); the
suite runs a small fixed sample of them, this script as many random ones as
you like, keeping every mutant that breaks the contract:

    .venv/bin/python scripts/fuzz.py                       # 10,000 mutants from a random seed
    .venv/bin/python scripts/fuzz.py -n 500 --seed 7       # a repeatable campaign
    .venv/bin/python scripts/fuzz.py --keep fuzz-failures  # where failing mutants go (default)

Exit status: 0 when every mutant kept the contract, 1 otherwise.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from rich.progress import Progress  # noqa: E402

from fuzzing import contract_problems, mutate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--mutants", type=int, default=10_000, help="how many mutants (default 10000)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the campaign (default: a random one)")
    parser.add_argument("--keep", type=Path, default=Path("fuzz-failures"),
                        help="directory for mutants that break the contract (default fuzz-failures/)")
    args = parser.parse_args()
    seed = random.randrange(2**32) if args.seed is None else args.seed
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    texts = [p.read_text() for p in specs]
    failures = 0
    start = time.perf_counter()
    print(f"fuzzing {len(specs)} specs with {args.mutants:,} mutants, seed {seed}")
    with tempfile.TemporaryDirectory() as work, Progress() as progress:
        task = progress.add_task("mutants", total=args.mutants)
        for i in range(args.mutants):
            rng = random.Random(f"{seed}-{i}")
            index = rng.randrange(len(specs))
            path = Path(work) / specs[index].name
            path.write_bytes(mutate(texts[index], rng, texts).encode("utf-8", errors="surrogatepass"))
            problems = contract_problems(path)
            if problems:
                failures += 1
                args.keep.mkdir(parents=True, exist_ok=True)
                kept = args.keep / f"{seed}-{i}-{specs[index].name}"
                kept.write_bytes(path.read_bytes())
                progress.console.print(f"[red]{kept}[/red]: " + "; ".join(problems)[:400])
            progress.advance(task)
    seconds = time.perf_counter() - start
    print(f"{args.mutants:,} mutants in {seconds:.0f} s: {args.mutants - failures:,} kept the contract, "
          f"{failures:,} broke it" + (f" (kept in {args.keep}/)" if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
