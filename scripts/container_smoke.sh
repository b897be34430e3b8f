#!/usr/bin/env bash
# Build the Docker image, run it and check that it serves: readiness, a real /forecast and
# /classify (scripts/container_smoke_check.py), the HEALTHCHECK, a non-root user, OpenMP threads
# from the CPU quota, the trainer, a mounted models directory and a clean stop on SIGTERM.
# Prints the image size and the seconds from `run` to ready.
#
# Uses docker when an engine answers. Otherwise podman as root, installed with apt-get when
# missing: with no registry to pull from, the python:3.11-slim base is made locally with
# debootstrap (Debian bookworm's python3 is 3.11); where pip is configured with its own CA bundle
# (TLS interception) or a local CPU torch wheel, the build gets them as read-only mounts.
# Idempotent; the base's tarball and podman's layer cache stay under $ODECAST_SMOKE_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${ODECAST_SMOKE_IMAGE:-localhost/odecast:smoke}
PORT=${ODECAST_SMOKE_PORT:-18000}
CACHE=${ODECAST_SMOKE_CACHE:-/var/cache/odecast-smoke}
BASE=docker.io/library/python:3.11-slim
NAME=odecast-smoke-$$
TORCH_VERSION=$(sed -n 's/^ARG TORCH_VERSION=//p' Dockerfile)
WORK=$(mktemp -d)
ENGINE=()

log() { printf '[container-smoke %s] %s\n' "$(date +%T)" "$*"; }
fail() { log "FAIL: $*" >&2; exit 1; }

cleanup() {
    if ((${#ENGINE[@]})); then
        "${ENGINE[@]}" rm -f "$NAME" "$NAME-mounted" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

use_docker() {
    ENGINE=(docker)
    RUN_OPTS=()
    BUILD_OPTS=()
}

# podman with the settings this kind of machine needs: runc (crun fails on its cgroups), small
# ulimits, overlay storage when the kernel has it (vfs copies every layer whole: ~4x slower).
use_podman() {
    [ "$(id -u)" = 0 ] || fail "no docker engine answers, and installing podman needs root"
    if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
        log "installing podman, runc, debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
    fi
    local driver=vfs
    grep -qw overlay /proc/filesystems && driver=overlay
    mkdir -p "$CACHE"
    ENGINE=(podman --root "$CACHE/storage" --runroot /run/odecast-smoke --storage-driver "$driver"
            --runtime runc --cgroup-manager cgroupfs --events-backend file)
    RUN_OPTS=(--ulimit nofile=1024:1024 --ulimit nproc=1024:1024)
    BUILD_OPTS=(--pull=never --format docker "${RUN_OPTS[@]}")
    ensure_base_image
    mount_pip_settings
}

ensure_base_image() {
    "${ENGINE[@]}" image exists "$BASE" && return
    local tarball=$CACHE/python-3.11-slim-bookworm.tar
    if [ ! -s "$tarball" ]; then
        log "making $BASE with debootstrap (bookworm minbase + python3)"
        local rootfs=$WORK/rootfs
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$rootfs" >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log" >&2; fail "debootstrap"; }
        # What Debian's slim images leave out too: the package cache, apt lists, docs, locales.
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
        tar -C "$rootfs" -cf "$tarball.partial" . && mv "$tarball.partial" "$tarball"
        rm -rf "$rootfs"
    fi
    "${ENGINE[@]}" import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' "$tarball" "$BASE" >/dev/null 2>&1
}

# A setting from pip's configuration ("global.cert", ":env:.find-links", ...), or nothing.
pip_setting() {
    python3 -m pip config list 2>/dev/null | sed -n "s/^[^.]*\.$1='\(.*\)'\$/\1/p" | head -1
}

mount_pip_settings() {
    local cert wheel dir
    cert=$(pip_setting cert)
    if [ -n "$cert" ] && [ -f "$cert" ]; then
        BUILD_OPTS+=(-v "$cert:/etc/ssl/certs/ca-certificates.crt:ro")
    fi
    for dir in $(pip_setting find-links); do
        wheel=$(find "${dir#file://}" -maxdepth 1 -name "torch-$TORCH_VERSION+cpu-cp311-*.whl" 2>/dev/null | head -1)
        if [ -n "$wheel" ]; then
            BUILD_OPTS+=(-v "$(dirname "$wheel"):/wheels:ro" --build-arg "TORCH_SOURCE=--find-links /wheels")
            return
        fi
    done
}

# An engine command whose stderr is shown only when it fails: without systemd, podman logs an
# error for every HEALTHCHECK it cannot put on a timer (check_healthcheck runs it instead).
quietly() {
    "${ENGINE[@]}" "$@" >/dev/null 2>"$WORK/engine.err" || { cat "$WORK/engine.err" >&2; return 1; }
}

# Poll readiness; print the seconds since $1 (a `date +%s.%N`) once it answers 200.
wait_ready() {
    local started=$1 container=$2 port=$3 deadline=$((SECONDS + 240))
    until curl -fsS -o /dev/null "http://127.0.0.1:$port/v2/health/ready" 2>/dev/null; do
        if [ "$("${ENGINE[@]}" inspect -f '{{.State.Running}}' "$container")" != true ] || ((SECONDS > deadline)); then
            "${ENGINE[@]}" logs "$container" 2>&1 | tail -40 >&2
            fail "$container never became ready"
        fi
        sleep 0.5
    done
    python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$started"
}

check_healthcheck() {
    if [ "${ENGINE[0]}" = podman ]; then
        "${ENGINE[@]}" healthcheck run "$NAME" >/dev/null 2>&1 || fail "HEALTHCHECK reports unhealthy"
        return
    fi
    local deadline=$((SECONDS + 90)) status
    until status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME") && [ "$status" = healthy ]; do
        ((SECONDS < deadline)) || fail "HEALTHCHECK status: $status"
        sleep 1
    done
}

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then use_docker; else use_podman; fi
# Containers that a killed earlier run left behind would hold the ports.
"${ENGINE[@]}" ps -aq --filter name=odecast-smoke- | xargs -r "${ENGINE[@]}" rm -f >/dev/null 2>&1
[ -f models/spirals/config.json ] && [ -f models/mnist-odenet/config.json ] \
    || fail "models/spirals and models/mnist-odenet must be bundled before the image can serve"

log "building $IMAGE with ${ENGINE[0]}"
build_started=$SECONDS
"${ENGINE[@]}" build "${BUILD_OPTS[@]}" -t "$IMAGE" . >"$WORK/build.log" 2>&1 \
    || { tail -40 "$WORK/build.log" >&2; fail "image build"; }
log "built in $((SECONDS - build_started)) s"

log "running it with --cpus 1 on port $PORT"
started=$(date +%s.%N)
quietly run -d --name "$NAME" "${RUN_OPTS[@]}" --cpus 1 -p "127.0.0.1:$PORT:8000" "$IMAGE"
ready_seconds=$(wait_ready "$started" "$NAME" "$PORT")
log "ready after $ready_seconds s"

python3 scripts/container_smoke_check.py "http://127.0.0.1:$PORT" models
check_healthcheck
uid=$("${ENGINE[@]}" exec "$NAME" id -u)
[ "$uid" != 0 ] || fail "the server runs as root"
threads=$("${ENGINE[@]}" exec "$NAME" sh -c 'tr "\0" "\n" </proc/1/environ' | sed -n 's/^OMP_NUM_THREADS=//p')
[ "$threads" = 1 ] || fail "OMP_NUM_THREADS is '$threads' under --cpus 1"
log "healthy, uid $uid, OMP_NUM_THREADS=$threads"

quietly stop -t 30 "$NAME"
exit_code=$("${ENGINE[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$exit_code" = 0 ] || fail "the server exited with $exit_code on SIGTERM (137: killed, no clean shutdown)"
log "stopped cleanly on SIGTERM"

quietly run --rm "${RUN_OPTS[@]}" "$IMAGE" python -m training latent-ode --help \
    || fail "python -m training does not run in the image"
log "the trainer runs in the image"

# Bring-your-own models: a copy of the bundled forecaster under another name, mounted read-only.
mkdir -p "$WORK/own-models"
cp -r models/spirals "$WORK/own-models/my-spirals"
chmod -R a+rX "$WORK/own-models"
quietly run -d --name "$NAME-mounted" "${RUN_OPTS[@]}" -p "127.0.0.1:$((PORT + 1)):8000" \
    -v "$WORK/own-models:/models:ro" -e ODECAST_MODELS_DIR=/models -e ODECAST_DEFAULT_MODEL=my-spirals \
    "$IMAGE"
wait_ready "$(date +%s.%N)" "$NAME-mounted" "$((PORT + 1))" >/dev/null
log "serves a mounted models directory (ODECAST_MODELS_DIR=/models)"

size=$("${ENGINE[@]}" image inspect -f '{{.Size}}' "$IMAGE")
log "image $IMAGE: $((size / 1000000)) MB; start to ready: $ready_seconds s"
log "PASS"
