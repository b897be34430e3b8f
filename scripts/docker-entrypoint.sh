#!/bin/sh
# Container entrypoint: size the OpenMP and MKL thread pools from the container's CPU quota, then
# run the command (the server by default) in this process's place.
#
# Without this, torch's kernels start one thread per host core even when the container may use
# only a few of them, and the CFS quota throttles the surplus. A value the user sets wins.
set -eu

cpu_quota_threads() {
    # cgroup v2: "<quota> <period>" or "max <period>"; cgroup v1: two files; no quota: nothing.
    if [ -r /sys/fs/cgroup/cpu.max ]; then
        read -r quota period < /sys/fs/cgroup/cpu.max
    elif [ -r /sys/fs/cgroup/cpu/cpu.cfs_quota_us ]; then
        read -r quota < /sys/fs/cgroup/cpu/cpu.cfs_quota_us
        read -r period < /sys/fs/cgroup/cpu/cpu.cfs_period_us
    else
        return 0
    fi
    case "$quota" in
        max | -1) return 0 ;;
    esac
    threads=$((quota / period))
    [ "$threads" -ge 1 ] || threads=1
    echo "$threads"
}

if [ -z "${OMP_NUM_THREADS:-}" ]; then
    # The quota, capped by the CPUs this process may run on (nproc honours cpusets).
    OMP_NUM_THREADS=$(nproc)
    threads=$(cpu_quota_threads)
    if [ -n "$threads" ] && [ "$threads" -lt "$OMP_NUM_THREADS" ]; then
        OMP_NUM_THREADS=$threads
    fi
    export OMP_NUM_THREADS
fi
export MKL_NUM_THREADS="${MKL_NUM_THREADS:-$OMP_NUM_THREADS}"

exec "$@"
