# odecast: the forecasting server (and the trainers) on a CPU-only PyTorch.
#
#   docker build -t odecast .                      # CPU torch from PyTorch's CPU wheel index
#   docker run -p 8000:8000 odecast                # serve the bundled models on :8000
#   docker run --rm odecast python -m training --help
#
# TORCH_SOURCE holds the pip options that say where torch comes from. The default, PyTorch's CPU
# index, keeps ~3 GB of CUDA libraries out of the image; a CUDA build is one build argument away
# (README, "GPU"). The project's other dependencies come from PyPI.

FROM python:3.11-slim AS builder

ARG TORCH_VERSION=2.13.0
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# torch first and alone: its layer survives every change to the project's own dependencies.
# TORCH_SOURCE is pip options, split on purpose; hadolint takes them for an unpinned package.
# hadolint ignore=DL3013,SC2086
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir ${TORCH_SOURCE} "torch==${TORCH_VERSION}"

# The project's dependencies, read from pyproject.toml, before the source is copied, so that
# editing code does not reinstall them.
WORKDIR /src
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt

COPY service ./service
COPY training ./training
RUN pip install --no-cache-dir --no-deps .

# What neither the server nor the trainers load: torch's C++ test binaries and headers (there is
# no compiler in the image) and the packages' own test suites; about 250 MB.
RUN site=$(python -c "import sysconfig; print(sysconfig.get_path('purelib'))") \
    && rm -rf "$site/torch/test" "$site/torch/include" \
    && find "$site" -mindepth 2 -type d -name tests -prune -exec rm -rf {} +


FROM python:3.11-slim

# The server reads its settings from ODECAST_* variables: it listens on 0.0.0.0:8000 and serves
# the bundled checkpoints in /app/models; mount your own directory and point ODECAST_MODELS_DIR
# at it to serve those instead.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    ODECAST_MODELS_DIR=/app/models \
    ODECAST_HOST=0.0.0.0 \
    ODECAST_PORT=8000

RUN groupadd --system --gid 10001 odecast \
    && useradd --system --create-home --uid 10001 --gid 10001 odecast

COPY --from=builder /opt/venv /opt/venv
COPY scripts/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /app
COPY models ./models
# Checkpoints are readable, not writable, by the server's user whatever modes they had in the
# build context (a checkout made under umask 077 is owner-only). The trainers write under
# /app/runs: a named volume mounted there inherits its owner.
RUN chmod -R a+rX,go-w models \
    && mkdir runs && chown 10001:10001 runs

USER 10001:10001
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['ODECAST_PORT']}/v2/health/ready\", timeout=4)"]

# The entrypoint sizes the OpenMP/MKL thread pools from the container's CPU quota, then execs CMD.
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["odecast", "serve"]
