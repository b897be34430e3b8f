"""How many CPUs this process may really use, and torch's thread pool sized to match.

torch sizes its intra-op pool from the host's cores and ignores container CPU quotas, so a
2-CPU container on a 64-core host would run 64 threads and be throttled. The quota is read
from cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``/``cpu.cfs_period_us``), rounded down
(a fractional CPU cannot run a whole extra thread without being throttled), and capped by the
scheduler affinity mask: the same rule as the image's entrypoint, which sets OMP_NUM_THREADS.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")


def _read_quota(cpu_max: Path, v1_dir: Path) -> tuple[str, str] | None:
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return quota, period
    except (OSError, ValueError):
        pass
    try:
        return ((v1_dir / "cpu.cfs_quota_us").read_text().strip(),
                (v1_dir / "cpu.cfs_period_us").read_text().strip())
    except OSError:
        return None


def cgroup_cpu_limit(cpu_max: Path = CGROUP_CPU_MAX, v1_dir: Path = CGROUP_V1_CPU) -> int | None:
    """Whole CPUs allowed by a cgroup quota (at least 1), or None when unlimited or absent."""
    found = _read_quota(cpu_max, v1_dir)
    if found is None or found[0] in ("max", "-1"):
        return None
    try:
        return max(1, math.floor(int(found[0]) / int(found[1])))
    except (ValueError, ZeroDivisionError):
        return None


def available_cpus(cpu_max: Path = CGROUP_CPU_MAX, v1_dir: Path = CGROUP_V1_CPU) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit(cpu_max, v1_dir)
    return min(cpus, limit) if limit else cpus


def configure_torch_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to ``requested`` or to the CPU quota; return the number set."""
    threads = requested or available_cpus()
    torch.set_num_threads(threads)
    return threads
