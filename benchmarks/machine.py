"""The processor a benchmark ran on, for its environment line: ratios against a reference move with it.

The same table on two 2-core machines of this workplace differed by more than the targets' margins
(regnet_x_1_6gf's inference build: 1.08x on one, 1.79x on another), so every table names its CPU.
"""

from __future__ import annotations

import platform
from pathlib import Path

# Instruction sets that change which kernels oneDNN and torch pick on x86.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile")


def cpu() -> str:
    """The CPU's model name and the instruction sets of `FLAGS` it has (Linux), else platform's name."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = set(fields.get("flags", "").split())
    found = [f for f in FLAGS if f in flags]
    return fields.get("model name", platform.machine()) + (f" ({', '.join(found)})" if found else "")


# glibc's malloc returns freed memory to the system: blocks above the mmap threshold (dynamic, at most
# 32 MiB by default) are unmapped on free, and a free top of the heap above the trim threshold is
# trimmed.  Every later allocation of that memory page-faults it in again.  Raising both keeps freed
# memory for reuse.  On efficientnet_b7 (batch 8) that cut archc's eager forward from about 436,000 page
# faults to 510 or fewer and its time by a third (benchmarks/README.md), so a table says which allocator ran.
KEEP_FREED_MEMORY = {"MALLOC_TRIM_THRESHOLD_": "4000000000", "MALLOC_MMAP_THRESHOLD_": "4000000000"}
_ALLOCATOR_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX", "GLIBC_TUNABLES",
                        "LD_PRELOAD")


def allocator(environ: dict[str, str]) -> str:
    """The memory allocator settings in `environ` that change how freed memory is reused: "default" or
    the variables that are set (LD_PRELOAD names a replacement allocator such as jemalloc)."""
    found = [f"{k}={environ[k]}" for k in _ALLOCATOR_VARIABLES if environ.get(k)]
    return ", ".join(found) if found else "default"
