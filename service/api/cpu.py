"""How many CPUs this process may really use, and torch's thread pool sized to match.

torch sizes its intra-op pool from the host's cores and ignores container CPU quotas, so a
2-CPU container on a 64-core host would run 64 threads and be throttled. The quota is read
from cgroup v2 (``cpu.max``) and capped by the scheduler affinity mask.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX) -> int | None:
    """CPUs allowed by a cgroup v2 quota (``"<quota> <period>"``), or None when unlimited/absent."""
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    try:
        return max(1, math.ceil(int(quota) / int(period)))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cpu_max)
    return min(cpus, limit) if limit else cpus


def configure_torch_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to ``requested`` or to the CPU quota; return the number set."""
    threads = requested or available_cpus()
    torch.set_num_threads(threads)
    return threads
