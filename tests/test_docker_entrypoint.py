"""scripts/docker-entrypoint.sh sizes OpenMP/MKL threads from the container's CPU quota.

Each case runs the entrypoint in a private mount namespace where /sys/fs/cgroup holds the quota
files a container would see (cgroup v2 ``cpu.max`` or v1 ``cpu.cfs_*``). That needs root and
util-linux ``unshare``; elsewhere the tests skip, and scripts/container_smoke.sh still checks a
real container under ``--cpus 1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ENTRYPOINT = Path(__file__).resolve().parents[1] / "scripts" / "docker-entrypoint.sh"
CPUS = len(os.sched_getaffinity(0))


def can_fake_cgroups() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--mount", "mount", "-t", "tmpfs", "none", "/sys/fs/cgroup"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not can_fake_cgroups(), reason="needs root and unshare --mount")


def threads_seen(tmp_path: Path, files: dict[str, str], **env: str) -> tuple[str, str]:
    """(OMP_NUM_THREADS, MKL_NUM_THREADS) as the command run by the entrypoint sees them."""
    cgroup = tmp_path / "cgroup"
    for name, text in files.items():
        (cgroup / name).parent.mkdir(parents=True, exist_ok=True)
        (cgroup / name).write_text(text + "\n")
    cgroup.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    script = (f'mount --bind "{cgroup}" /sys/fs/cgroup && exec sh "{ENTRYPOINT}" '
              'sh -c \'echo "$OMP_NUM_THREADS $MKL_NUM_THREADS"\'')
    answer = subprocess.run(["unshare", "--mount", "sh", "-c", script], env={**clean, **env},
                            capture_output=True, text=True, check=True)
    omp, mkl = answer.stdout.split()
    return omp, mkl


@pytest.mark.parametrize(("quota", "expected"), [
    ("100000 100000", 1),
    ("150000 100000", 1),   # 1.5 CPUs: one thread never throttled, not two that are
    ("20000 100000", 1),    # below one CPU: still one thread
    ("400000 100000", min(4, CPUS)),
    ("max 100000", CPUS),
])
def test_cgroup_v2_quota(tmp_path, quota, expected):
    assert threads_seen(tmp_path, {"cpu.max": quota}) == (str(expected), str(expected))


def test_cgroup_v1_quota(tmp_path):
    files = {"cpu/cpu.cfs_quota_us": "100000", "cpu/cpu.cfs_period_us": "100000"}
    assert threads_seen(tmp_path, files) == ("1", "1")
    files = {"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}
    assert threads_seen(tmp_path, files) == (str(CPUS), str(CPUS))


def test_no_quota_files_means_the_cpus_available(tmp_path):
    assert threads_seen(tmp_path, {}) == (str(CPUS), str(CPUS))


def test_values_the_user_sets_win(tmp_path):
    assert threads_seen(tmp_path, {"cpu.max": "100000 100000"}, OMP_NUM_THREADS="3") == ("3", "3")
    assert threads_seen(tmp_path, {"cpu.max": "100000 100000"}, MKL_NUM_THREADS="5") == ("1", "5")
