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
