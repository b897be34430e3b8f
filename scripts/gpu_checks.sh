#!/usr/bin/env bash
# What CI cannot check, for a machine with a CUDA GPU: both trainers on CUDA, one process and
# under torchrun (NCCL), each writing a checkpoint that is then loaded back on the CPU.
#
#   bash scripts/gpu_checks.sh OUT_DIR MNIST_DIR      (DEVICE=cpu runs the same steps without a GPU)
set -eu
device=${DEVICE:-cuda}
out=${1:?usage: gpu_checks.sh OUT_DIR MNIST_DIR}
mnist=${2:?usage: gpu_checks.sh OUT_DIR MNIST_DIR}
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
spirals="--spirals-count 200 --spirals-observed 50 --plot-series 1"
# shellcheck disable=SC2086
python3 -m training latent-ode --device "$device" --epochs 3 $spirals --out "$out/latent-one"
# shellcheck disable=SC2086
python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m training latent-ode --device "$device" \
  --epochs 2 $spirals --out "$out/latent-torchrun"
python3 -m training mnist --model odenet --device "$device" --epochs 1 --limit-train-batches 100 \
  --limit-test-batches 20 --data-dir "$mnist" --out "$out/mnist-one"
python3 - "$out" <<'PY'
import sys
from pathlib import Path

import numpy as np

from service.model.classifier import Classifier
from service.model.forecaster import Forecaster, ForecastQuery

out = Path(sys.argv[1])
for name in ("latent-one", "latent-torchrun"):
    forecaster = Forecaster.load(out / name)
    times = np.linspace(0.0, 3.0, 20)
    query = ForecastQuery(times, np.stack([np.cos(times), np.sin(times)], axis=1), np.array([1.5, 4.0]))
    mean = forecaster.predict([query], num_samples=8, seed=0).forecasts[0].mean
    print(f"{name}: served on the CPU, forecast finite: {bool(np.isfinite(mean).all())}")
classifier = Classifier.load(out / "mnist-one")
print(f"mnist-one: loads on the CPU, metrics {classifier.metrics}")

# A batch whose series reach different distances in both directions: the inference solver's
# problems leave the batch at different steps, on the GPU as on the CPU.
import torch  # noqa: E402

if torch.cuda.is_available():
    forecaster = Forecaster.load(out / "latent-one")
    times = np.linspace(0.0, 3.0, 20)
    values = np.stack([np.cos(times), np.sin(times)], axis=1)
    queries = [ForecastQuery(times[:n], values[:n], np.linspace(-reach / 4, times[n - 1] + reach, 9))
               for n, reach in ((5, 0.5), (12, 3.0), (20, 1.5))]
    on_cpu = forecaster.predict(queries, quantiles=[0.1, 0.9], num_samples=16, seed=1).forecasts
    forecaster.model.to("cuda")
    on_gpu = forecaster.predict(queries, quantiles=[0.1, 0.9], num_samples=16, seed=1).forecasts
    gap = max(float(np.abs(a.mean - b.mean).max()) for a, b in zip(on_cpu, on_gpu, strict=True))
    print(f"latent-one: a batch of 3 forecast on CUDA and on the CPU differ by at most {gap:.2e}")
    assert gap < 1e-3, gap
PY
