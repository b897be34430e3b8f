"""Chen et al. 2018, Table 1 on MNIST, measured on this machine, plus a gradient-modes study.

Three parts, all written to one JSON file (``benchmarks/results/mnist_table1.json`` by default):

1. ``table``: for every trained checkpoint given (``--checkpoint odenet=DIR`` ...): test error
   on the full 10k test set, parameter count, inference images/s at batch 1 and 128, and the
   peak memory and time of one training step (batch 128).
2. ``scaling``: the ODE-Net field integrated by L rk4 steps (L = 1, 2, 4, ...), with the gradient
   from backprop through the steps (this is RK-Net), the adjoint, and per-step checkpointing;
   training-step peak memory and time of the feature block (+ head) as L grows. The paper's
   claim: O(L) memory for RK-Net, O(1) for the adjoint. A ResNet with 6·k blocks gives its O(L)
   line.
3. ``gradients``: on the trained ODE-Net (dopri5, its own tolerance), the gradient of the loss
   on one test batch by the three modes: relative L2 error over all parameters against direct
   backprop (the exact gradient of the computed forward pass) and against a tight-tolerance
   reference (rtol = atol = 1e-6, closest to the ODE's true gradient), with peak memory and time.

Peak memory is measured in a fresh subprocess per configuration, after the model and batch are
built: Linux's resident high-water mark (``VmHWM``) is reset to the current RSS by writing 5 to
``/proc/self/clear_refs``, one training step runs, and the peak is ``VmHWM`` minus the RSS before
the step. ``MALLOC_MMAP_THRESHOLD_=65536`` makes glibc mmap every tensor above 64 KiB and unmap
it on free, so RSS follows the live tensors (activations kept for backward, gradients).
Times are medians over a few steps with ``torch.set_num_threads(--threads)``; on a shared
machine they move with the load, which is recorded next to them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.model.classifier import Classifier  # noqa: E402
from service.model.mnist_nets import WIDTH, MNISTClassifier, build_classifier, parameter_count  # noqa: E402
from service.model.odenet import ODEBlock  # noqa: E402
from service.model.solver import SolverConfig  # noqa: E402
from training.data.mnist_idx import load_split, to_tensor  # noqa: E402

PAPER = {"mlp": (0.0160, 0.24e6), "resnet": (0.0041, 0.60e6), "rknet": (0.0047, 0.22e6),
         "odenet": (0.0042, 0.22e6)}
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "mnist"


def build(spec: dict[str, Any]) -> torch.nn.Module:
    """A whole classifier (``architecture``), or only a feature block and the head (``block``).

    The scaling study measures feature blocks without the downsampling: its backward pass at
    28×28 and 13×13 would otherwise set the peak and hide the block's own memory.
    """
    if spec["kind"] == "architecture":
        return build_classifier(spec["architecture"])
    if spec["block"] == "resnet":
        features = build_classifier({"name": "resnet", "blocks": spec["blocks"]}).features
    elif spec["gradient"] == "checkpointed":  # L segments of one rk4 step, each recomputed alone
        features = ODEBlock(WIDTH, SolverConfig(method="rk4"), "checkpointed", spec["steps"])
    else:  # one solve of L rk4 steps: the adjoint keeps only y(0) and y(1)
        solver = SolverConfig(method="rk4", step_size=1.0 / spec["steps"])
        features = ODEBlock(WIDTH, solver, spec["gradient"], 1)
    probe = MNISTClassifier(features)
    probe.downsampling = torch.nn.Identity()
    return probe


def batch(spec: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Test images, or random inputs of the right shape (28×28 images, 6×6 feature maps)."""
    size = spec["batch_size"]
    if spec.get("data_dir"):
        test = load_split(spec["data_dir"], "test")
        return to_tensor(test.images[:size]), torch.from_numpy(test.labels[:size])
    generator = torch.Generator().manual_seed(0)
    shape = (size, 1, 28, 28) if spec["kind"] == "architecture" else (size, WIDTH, 6, 6)
    return torch.rand(shape, generator=generator), torch.randint(0, 10, (size,), generator=generator)


def memory_kib(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (resident high-water mark) from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def training_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int, int]:
    """One forward and backward pass: (seconds, forward NFE, backward NFE); gradients left in .grad."""
    model.zero_grad(set_to_none=True)
    model.reset_nfe()
    started = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    nfe_forward = model.nfe
    loss.backward()
    return time.perf_counter() - started, nfe_forward, model.nfe - nfe_forward


def measure_step(spec: dict[str, Any]) -> dict[str, Any]:
    """Run inside a fresh process: peak RSS growth of one training step, then median step time."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    model = build(spec)
    if spec.get("weights"):
        model.load_state_dict(Classifier.load(spec["weights"]).model.state_dict())
    x, y = batch(spec)
    training_step(model, x, y)  # warm-up: one-off allocations (thread pools, caches) are not the step's
    Path("/proc/self/clear_refs").write_text("5")
    before = memory_kib("VmRSS")
    seconds, nfe_forward, nfe_backward = training_step(model, x, y)
    peak_mib = (memory_kib("VmHWM") - before) / 1024
    times = [seconds] + [training_step(model, x, y)[0] for _ in range(spec["repeats"] - 1)]
    return {"peak_step_memory_mib": round(peak_mib, 1),
            "seconds_per_step": round(statistics.median(times), 4),
            "nfe_forward": nfe_forward, "nfe_backward": nfe_backward}


def in_subprocess(spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"]), "MALLOC_MMAP_THRESHOLD_": "65536"}
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True,
                            text=True, check=True, env=env)
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "load_average": os.getloadavg()[0]}


@torch.no_grad()
def images_per_second(model: torch.nn.Module, images: torch.Tensor, batch_size: int, calls: int) -> float:
    model(images[:batch_size])  # warm-up
    started = time.perf_counter()
    for i in range(calls):
        start = (i * batch_size) % (len(images) - batch_size + 1)
        model(images[start:start + batch_size])
    return calls * batch_size / (time.perf_counter() - started)


@torch.no_grad()
def test_error(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    wrong, nfe = 0, []
    for chunk, targets in zip(images.split(1000), labels.split(1000), strict=True):
        model.reset_nfe()
        wrong += (model(chunk).argmax(1) != targets).sum().item()
        nfe.append(model.nfe)
    return wrong / len(images), statistics.mean(nfe)


def table(checkpoints: dict[str, str], args: argparse.Namespace) -> list[dict[str, Any]]:
    test = load_split(args.data_dir, "test")
    images, labels = to_tensor(test.images), torch.from_numpy(test.labels)
    rows = []
    for name, directory in checkpoints.items():
        classifier = Classifier.load(directory)
        model = classifier.model
        paper_error, paper_parameters = PAPER[classifier.architecture]
        error, nfe = test_error(model, images, labels)
        step = in_subprocess({"kind": "architecture", "architecture": classifier.config["architecture"],
                              "weights": directory, "data_dir": args.data_dir, "batch_size": 128,
                              "repeats": args.repeats, "threads": args.threads})
        rows.append({
            "model": name, "checkpoint": directory, "architecture": classifier.config["architecture"],
            "epochs": classifier.config.get("epochs"), "preset": classifier.config.get("preset"),
            "initialized_from": (classifier.config.get("initialized_from") or {}).get("architecture"),
            "test_error": error, "test_nfe_per_batch_of_1000": nfe,
            "parameters": parameter_count(model),
            "paper_test_error": paper_error, "paper_parameters": paper_parameters,
            "images_per_second_batch_1": round(images_per_second(model, images, 1, args.calls_batch_1), 1),
            "images_per_second_batch_128":
                round(images_per_second(model, images, 128, args.calls_batch_128), 1),
            "training_step_batch_128": step,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def scaling(args: argparse.Namespace) -> list[dict[str, Any]]:
    if any(steps & (steps - 1) for steps in args.steps):
        raise SystemExit("--steps must be powers of two, so that step_size 1/L is exact")
    rows = []
    common = {"batch_size": args.batch_size, "repeats": args.repeats, "threads": args.threads}
    for steps in args.steps:
        for gradient in ("direct", "adjoint", "checkpointed"):
            label = "RK-Net" if gradient == "direct" else "ODE-Net"
            row = {"steps": steps, "gradient": gradient, "label": label,
                   **in_subprocess({"kind": "block", "block": "ode", "gradient": gradient, "steps": steps,
                                    **common})}
            rows.append(row)
            print(json.dumps(row), flush=True)
    for multiple in args.resnet_multiples:
        row = {"resnet_blocks": 6 * multiple, **in_subprocess(
            {"kind": "block", "block": "resnet", "blocks": 6 * multiple, **common})}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def gradient_vector(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
                    ) -> tuple[torch.Tensor, int, int]:
    _, nfe_forward, nfe_backward = training_step(model, x, y)
    return torch.cat([p.grad.flatten() for p in model.parameters()]), nfe_forward, nfe_backward


def gradients(directory: str, args: argparse.Namespace) -> dict[str, Any]:
    """Gradient of the trained ODE-Net's loss on one test batch, by each mode."""
    base = Classifier.load(directory).config["architecture"]
    weights = Classifier.load(directory).model.state_dict()
    x, y = batch({"kind": "architecture", "batch_size": args.batch_size, "data_dir": args.data_dir})

    def gradient_of(**changes: Any) -> tuple[torch.Tensor, int, int]:
        model = build_classifier({**base, **changes})
        model.load_state_dict(weights)
        return gradient_vector(model, x, y)

    reference = gradient_of(tol=1e-6, gradient="direct", segments=1)[0]
    modes = [("direct", 1), ("adjoint", 1), ("direct", args.segments), ("checkpointed", args.segments)]
    grads, results = {}, {}
    for gradient, segments in modes:
        grad, nfe_forward, nfe_backward = gradient_of(gradient=gradient, segments=segments)
        grads[gradient, segments] = grad
        direct = grads["direct", 1]
        step = in_subprocess({"kind": "architecture",
                              "architecture": {**base, "gradient": gradient, "segments": segments},
                              "weights": directory, "data_dir": args.data_dir, "batch_size": args.batch_size,
                              "repeats": args.repeats, "threads": args.threads})
        results[f"{gradient}/{segments}"] = {
            "gradient": gradient, "segments": segments,
            "nfe_forward": nfe_forward, "nfe_backward": nfe_backward,
            "relative_error_vs_direct": ((grad - direct).norm() / direct.norm()).item(),
            "relative_error_vs_direct_same_segments":
                ((grad - grads["direct", segments]).norm() / direct.norm()).item(),
            "relative_error_vs_tight_reference": ((grad - reference).norm() / reference.norm()).item(),
            **{k: v for k, v in step.items() if not k.startswith("nfe")},
        }
        print(f"{gradient}/{segments}", json.dumps(results[f"{gradient}/{segments}"]), flush=True)
    return {"checkpoint": directory, "architecture": base, "batch_size": args.batch_size,
            "reference": "direct backprop at rtol = atol = 1e-6", "modes": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=DIR",
                        help="a trained checkpoint for the table (repeat for each model)")
    parser.add_argument("--gradients-from", help="trained ODE-Net checkpoint for the gradient study")
    parser.add_argument("--data-dir", default=os.environ.get("ODECAST_MNIST_DIR", str(DEFAULT_DATA)))
    parser.add_argument("--parts", default="table,scaling,gradients")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--resnet-multiples", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--segments", type=int, default=4, help="checkpoint segments in the gradient study")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--calls-batch-1", type=int, default=200)
    parser.add_argument("--calls-batch-128", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "mnist_table1.json"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure_step(json.loads(args.worker))))
        return
    torch.set_num_threads(args.threads)
    parts = set(args.parts.split(","))
    started = time.time()
    results: dict[str, Any] = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": args.threads,
        "memory_method": "VmHWM - VmRSS over one training step (clear_refs reset), fresh subprocess, "
                         "MALLOC_MMAP_THRESHOLD_=65536",
    }
    if "table" in parts:
        results["table"] = table(dict(item.split("=", 1) for item in args.checkpoint), args)
    if "scaling" in parts:
        results["scaling"] = scaling(args)
    if "gradients" in parts and args.gradients_from:
        results["gradients"] = gradients(args.gradients_from, args)
    results["wall_time_s"] = round(time.time() - started, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out} in {results['wall_time_s']} s")


if __name__ == "__main__":
    main()
