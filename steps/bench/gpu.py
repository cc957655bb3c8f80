"""GPU benchmark and the CUDA checks CI cannot run: one script for a lent GPU machine.

    python -m steps.bench.gpu [--quick] [--device cuda|cpu] [--json PATH]
    bash steps/bench/gpu_run.sh          # on the lent machine: the full run, JSON under $OUT

Speed (training images/s of whole steps through steps.train.engine.train_one_epoch: forward,
loss, backward, optimizer step; batches drawn from a ResidentSplit on the device, so the data path
costs next to nothing):
- every registered model (steps.models.MODEL_SPECS) at batch 32, 64 and 128 with AMP bf16 on/off
  and channels_last on/off; torch.compile (the project's prepare_model: mode max-autotune) only for
  the default model, tiny_efficientvit, at batch 64 with bf16 and channels_last (compiling is
  minutes per shape; measured last, after the checks). Each configuration: WARMUP steps, then STEPS timed steps between
  torch.cuda.synchronize() calls.
- the data path: the default model trained one epoch from the loader (build_loaders: pinned memory,
  0 and 6 worker processes, augment=True) against the resident path (ResidentSplit, flips on the
  device), images/s on the same generated rows. The loader also draws RITnet's lines and blur.

Checks (each PASS, FAIL or SKIP; the exit code is 1 when one FAILs): AMP fp16 with a GradScaler
(finite loss, weights move, scale kept), channels_last (same outputs as NCHW, a step trains),
torch.compile (same outputs as eager), pinned memory (a pinned batch copied non_blocking arrives
intact; the loader's batches are pinned), ConfusionMatrix accumulated on the device (equal to a
host bincount), the torch label maps on the device (ms per batch of 64; max abs difference to the
OpenCV path on a few rows, at most 1e-4), and NCCL in one process (init_process_group('nccl',
world_size=1, rank=0, file:// init), an all_reduce, destroy_process_group).

--quick --device cpu (what tests run, in well under a minute on one CPU thread): batch 2, 2 timed
steps after 1 warm-up, the micro segmentation model and the ellipse model each with (bf16,
channels_last) and (fp32, NCHW), compile off, NCCL skipped (gloo instead), the loader with 0
workers only, label maps on 1 row. On a CPU, bf16 and channels_last are what torch does with them
there, not what training does (the project turns both off on CPUs); the figures mean little, the
run checks that every path works.

Imports: torch, numpy and cv2 (opencv-python-headless), and this project's steps.bench,
steps.data.{augment, camera_augment, frames, openeds, resident, sampling, synthetic, transforms},
steps.errors, steps.models and steps.train.{device, distributed, engine, label_maps, losses,
metrics, optim, progress, tasks}. The rows are generated in memory (steps.data.synthetic frames
through steps.data.transforms' enhance, binarize and ellipse fit), so datasets, pyarrow and
pydantic are not needed, except by the loader comparison (build_loaders reads a datasets.Dataset):
without datasets and pyarrow those rows and the loader's pinned-memory check print SKIP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from steps.data.frames import IMAGE_SHAPE
from steps.data.resident import ArrayRows, ResidentLoader, ResidentSplit
from steps.models import MODEL_SPECS, create_model
from steps.train.device import Precision, configure_backends, prepare_model, torch_threads
from steps.train.engine import StepConfig, train_one_epoch
from steps.train.optim import LRSchedule, build_optimizer
from steps.train.tasks import Task, task_for

DEFAULT_MODEL = "tiny_efficientvit"
DEFAULT_JSON = Path("runs") / "gpu_bench.json"


@dataclass(frozen=True)
class Sizes:
    models: tuple[str, ...]
    batches: tuple[int, ...]
    warmup: int
    steps: int
    compile_batches: tuple[int, ...]
    loader_workers: tuple[int, ...]
    loader_batches: int       # batches per epoch of the data-path comparison
    data_batch: int           # its batch size
    unique_frames: int        # generated frames, repeated to fill the rows
    maps_batch: int           # labels per timed label-maps batch
    maps_rows: int            # rows compared with the OpenCV path
    configs: tuple[tuple[str, bool], ...] = (("bf16", True), ("bf16", False), ("off", True), ("off", False))


FULL = Sizes(models=tuple(MODEL_SPECS), batches=(32, 64, 128), warmup=3, steps=10, compile_batches=(64,),
             loader_workers=(0, 6), loader_batches=8, data_batch=64, unique_frames=16, maps_batch=64, maps_rows=4)
QUICK = Sizes(models=("tiny_efficientvit_micro", "ellipse_regression"), batches=(2,), warmup=1, steps=2,
              compile_batches=(), loader_workers=(0,), loader_batches=2, data_batch=2, unique_frames=2,
              maps_batch=1, maps_rows=1, configs=(("bf16", True), ("off", False)))
# One torch thread on a CPU: the smoke run shares small machines (see steps.bench.training_speed).
CPU_THREADS = 1


# ---------------------------------------------------------------- data

def generated_rows(count: int, unique: int, seed: int = 0) -> ArrayRows:
    """`count` rows (compact: enhanced image, 0/1 label, ellipse) from `unique` generated frames."""
    from steps.data import transforms
    from steps.data.synthetic import render_frame

    rng = np.random.default_rng(seed)
    frames: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    params = transforms.PreprocessParams()
    while len(frames) < unique:
        image, label = render_frame(rng)
        mask = transforms.binarize(label)
        if not mask.any():
            continue  # a closed eye
        frames.append((transforms.enhance_image(image, params), mask,
                       np.asarray(transforms.fit_pupil_ellipse(mask).normalized(), np.float32)))
    picks = [frames[i % unique] for i in range(count)]
    return ArrayRows(np.stack([f[0] for f in picks]), np.stack([f[1] for f in picks]), np.stack([f[2] for f in picks]),
                     [f"gen_{i % unique:03d}_{i:05d}.png" for i in range(count)])


def rows_as_dataset(rows: ArrayRows) -> Any:
    """The same rows as a compact datasets.Dataset, for build_loaders (needs datasets + pyarrow)."""
    import datasets

    height, width = IMAGE_SHAPE
    features = datasets.Features({
        "image": datasets.Array2D((height, width), "uint8"), "label": datasets.Array2D((height, width), "uint8"),
        **{name: datasets.Value("float32") for name in ("cx", "cy", "rx", "ry")},
        "filename": datasets.Value("string"), "preprocessed": datasets.Value("bool")})
    columns = {"image": list(rows.image), "label": list(rows.label), "filename": rows.filenames,
               "preprocessed": [True] * len(rows)}
    columns.update({name: rows.ellipse[:, k].tolist() for k, name in enumerate(("cx", "cy", "rx", "ry"))})
    return datasets.Dataset.from_dict(columns, features=features)


# ---------------------------------------------------------------- training steps

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Trainer:
    model: nn.Module          # what trains (compiled or not)
    plain: nn.Module
    task: Task
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    config: StepConfig

    def run(self, batches: Iterable[dict[str, Any]]) -> Any:
        return train_one_epoch(self.model, self.task, self.loss_fn, batches, self.optimizer,
                               LRSchedule(None, False, "none"), self.config, epoch=1)


def make_trainer(name: str, device: torch.device, *, precision: Precision, channels_last: bool,
                 compile_model: bool = False) -> Trainer:
    torch.manual_seed(0)
    task = task_for(MODEL_SPECS[name].task)
    plain = create_model(name)
    model = prepare_model(plain, device, channels_last=channels_last, compile_model=compile_model)
    optimizer = build_optimizer(plain, SimpleNamespace(optimizer="adamw", lr=1e-3, weight_decay=1e-4, momentum=0.9))
    loss_fn = task.build_loss(SimpleNamespace(dice_weight=1.0, surface_loss_max=1.0)).to(device)
    config = StepConfig(device=device, precision=precision, scaler=precision.grad_scaler(device),
                        channels_last=channels_last, check_finite_every=1 if device.type == "cpu" else 25)
    return Trainer(model, plain, task, loss_fn, optimizer, config)


def device_batches(split: ResidentSplit, batch: int, count: int) -> list[dict[str, Any]]:
    """`count` batches drawn on the device (epoch 1's flips), built before the clock starts."""
    size = len(split)
    return [split.batch(1, [(k * batch + i) % size for i in range(batch)]) for k in range(count)]


def timed_images_per_second(trainer: Trainer, batches: list[dict[str, Any]], warmup: int) -> float:
    device = trainer.config.device
    trainer.run(batches[:warmup])
    synchronize(device)
    started = time.perf_counter()
    trainer.run(batches[warmup:])
    synchronize(device)
    return sum(len(b["filename"]) for b in batches[warmup:]) / (time.perf_counter() - started)


def precision_of(amp: str) -> Precision:
    return {"off": Precision(None, False), "bf16": Precision(torch.bfloat16, False),
            "fp16": Precision(torch.float16, True)}[amp]


def speed_table(device: torch.device, sizes: Sizes, split: ResidentSplit,
                log: Callable[[str], None]) -> list[dict[str, Any]]:
    """images/s per model, batch, AMP, channels_last (and compile for the default model)."""
    results = []
    for name in sizes.models:
        for batch in sizes.batches:
            batches = device_batches(split, batch, sizes.warmup + sizes.steps)
            configs = [(amp, channels_last, False) for amp, channels_last in sizes.configs]
            if name == DEFAULT_MODEL and batch in sizes.compile_batches:
                configs.append(("bf16", True, True))
            for amp, channels_last, compiled in configs:
                entry = {"model": name, "batch": batch, "amp": amp, "channels_last": channels_last,
                         "compile": compiled}
                try:
                    trainer = make_trainer(name, device, precision=precision_of(amp), channels_last=channels_last,
                                           compile_model=compiled)
                    entry["images_per_second"] = round(timed_images_per_second(trainer, batches, sizes.warmup), 2)
                except Exception as error:  # noqa: BLE001 - one configuration failing (OOM) must not hide the rest
                    entry["error"] = f"{type(error).__name__}: {error}"[:300]
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                log(format_speed(entry))
                results.append(entry)
            del batches
    return results


def format_speed(entry: dict[str, Any]) -> str:
    value = f"{entry['images_per_second']:10.1f}" if "images_per_second" in entry else f"  {entry.get('error')}"
    return (f"  {entry['model']:26s} batch {entry['batch']:4d}  amp {entry['amp']:4s}  "
            f"channels_last {'on ' if entry['channels_last'] else 'off'}  compile {'on ' if entry['compile'] else 'off'}"
            f"  images/s {value}")


def data_paths(device: torch.device, sizes: Sizes, rows: ArrayRows, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """One epoch of the default model fed by the loader (each worker count) and by the resident split."""
    precision = precision_of("bf16" if device.type == "cuda" else "off")
    results = []

    def epoch_rate(loader: Any, label: str, set_epoch: Callable[[Any, int], None]) -> None:
        trainer = make_trainer(DEFAULT_MODEL, device, precision=precision, channels_last=True)
        set_epoch(loader, 1)
        trainer.run(loader)  # warm-up epoch (workers start, cudnn autotunes)
        set_epoch(loader, 2)
        synchronize(device)
        started = time.perf_counter()
        progress = trainer.run(loader)
        synchronize(device)
        entry = {"path": label, "batch": sizes.data_batch, "rows": len(rows),
                 "images_per_second": round(progress.images / (time.perf_counter() - started), 2)}
        log(f"  {label:44s} images/s {entry['images_per_second']:10.1f}")
        results.append(entry)

    resident = ResidentLoader(ResidentSplit(rows, device, seed=0, augment=True), sizes.data_batch, seed=0)
    epoch_rate(resident, "resident (ResidentSplit, flips on the device)", ResidentLoader.set_epoch)
    try:
        dataset = rows_as_dataset(rows)
    except ImportError as error:
        log(f"  loader rows SKIP: {error} (carry datasets and pyarrow to compare the loader)")
        return results
    from steps.data.loading import build_loaders, set_loader_epoch

    for workers in sizes.loader_workers:
        train, _ = build_loaders(dataset, dataset, task="segmentation", batch_size=sizes.data_batch,
                                 num_workers=workers, augment=True, input_mode="preprocessed", seed=0,
                                 distributed=False, pin_memory=device.type == "cuda")
        epoch_rate(train, f"loader (build_loaders, pinned, {workers} workers)", set_loader_epoch)
    return results


# ---------------------------------------------------------------- checks

class Skip(Exception):
    """A check that does not apply here (no CUDA, quick mode, a missing package)."""


def check_amp_fp16(device: torch.device, split: ResidentSplit, sizes: Sizes) -> str:
    trainer = make_trainer("tiny_efficientvit_micro", device, precision=precision_of("fp16"), channels_last=True)
    before = {k: v.detach().clone() for k, v in trainer.plain.state_dict().items()}
    progress = trainer.run(device_batches(split, sizes.batches[0], 3))
    loss = progress.losses.compute()["loss"]
    moved = any(not torch.equal(before[k], v) for k, v in trainer.plain.state_dict().items())
    scaler = trainer.config.scaler
    if scaler is None:
        raise AssertionError("fp16 without a GradScaler")
    scale = float(scaler.get_scale()) if scaler.is_enabled() else float("nan")
    if not (np.isfinite(loss) and moved and (scale > 0 or not scaler.is_enabled())):
        raise AssertionError(f"loss {loss}, weights moved {moved}, scale {scale}")
    return f"loss {loss:.4f}, GradScaler scale {scale:g} (enabled {scaler.is_enabled()})"


def relative_difference(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value - reference).abs().max()) / max(1.0, float(reference.abs().max()))


def _outputs(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(image).float()


def check_channels_last(device: torch.device, split: ResidentSplit, sizes: Sizes) -> str:
    from steps.train.tasks import batch_inputs

    batch = split.batch(0, [0, 1][: max(1, min(2, len(split)))])
    trainer = make_trainer("tiny_efficientvit_micro", device, precision=precision_of("off"), channels_last=True)
    nchw = batch_inputs(batch, device, channels_last=False)
    reference = _outputs(trainer.plain.to(memory_format=torch.contiguous_format), nchw)  # type: ignore[call-overload]
    trainer.plain.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    converted = _outputs(trainer.plain, nchw.contiguous(memory_format=torch.channels_last))
    difference = relative_difference(converted, reference)
    trainer.run([batch])
    if difference > 1e-2:  # TF32 convolutions (configure_backends) pick different kernels per layout
        raise AssertionError(f"channels_last outputs differ from NCHW by {difference:g} (relative)")
    return f"max |NHWC - NCHW| / max |NCHW| output {difference:.2e}; a training step ran"


def check_compile(device: torch.device, split: ResidentSplit, sizes: Sizes) -> str:
    if device.type != "cuda" or not sizes.compile_batches:
        raise Skip("compile is used on CUDA only, and off in quick mode")
    from steps.train.tasks import batch_inputs

    torch.manual_seed(0)
    model = create_model("tiny_efficientvit_micro")
    compiled = prepare_model(model, device, channels_last=True, compile_model=True)
    image = batch_inputs(split.batch(0, [0, 1]), device, channels_last=True)
    started = time.perf_counter()
    difference = relative_difference(_outputs(compiled, image), _outputs(model, image))
    if difference > 2e-2:
        raise AssertionError(f"compiled outputs differ from eager by {difference:g} (relative)")
    return (f"max |compiled - eager| / max |eager| output {difference:.2e}; "
            f"compiled in {time.perf_counter() - started:.0f} s")


def check_pinned(device: torch.device, split: ResidentSplit, sizes: Sizes) -> str:
    if device.type != "cuda":
        raise Skip("pinned memory is a CUDA feature")
    host = torch.randint(0, 256, (8, 1, *IMAGE_SHAPE), dtype=torch.uint8).pin_memory()
    copied = host.to(device, non_blocking=True)
    torch.cuda.current_stream(device).synchronize()
    if not host.is_pinned() or not torch.equal(copied.cpu(), host):
        raise AssertionError("a pinned non_blocking copy did not arrive intact")
    note = "pinned non_blocking copy intact"
    try:
        dataset = rows_as_dataset(ArrayRows(split.image[:4, 0].cpu().numpy(), split.label[:4].cpu().numpy()
                                            if split.label is not None else np.zeros((4, *IMAGE_SHAPE), np.uint8),
                                            split.ellipse[:4].cpu().numpy()))
    except ImportError:
        return note + "; loader not checked (no datasets/pyarrow)"
    from steps.data.loading import build_loaders, set_loader_epoch

    loader, _ = build_loaders(dataset, dataset, task="segmentation", batch_size=2, num_workers=0, augment=False,
                              input_mode="preprocessed", seed=0, distributed=False, pin_memory=True)
    set_loader_epoch(loader, 1)
    batch = next(iter(loader))
    if not batch["image"].is_pinned():
        raise AssertionError("the loader's batch (pin_memory=True) is not pinned")
    return note + "; the loader's batches are pinned"


def check_confusion_matrix(device: torch.device, split: ResidentSplit, sizes: Sizes) -> str:
    from steps.train.metrics import ConfusionMatrix

    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 2, (4, *IMAGE_SHAPE), generator=generator)
    target = torch.randint(0, 2, (4, *IMAGE_SHAPE), generator=generator)
    matrix = ConfusionMatrix(2, device)
    for k in range(4):
        matrix.update(pred[k].to(device), target[k].to(device, torch.uint8))
    expected = np.bincount((target.numpy() * 2 + pred.numpy()).ravel(), minlength=4).reshape(2, 2)
    if matrix.matrix.device.type != device.type or not np.array_equal(matrix.matrix.cpu().numpy(), expected):
        raise AssertionError(f"device matrix {matrix.matrix.tolist()} != host {expected.tolist()}")
    return f"counts on {matrix.matrix.device} equal a host bincount; mIoU {matrix.compute()['miou']:.4f}"


def check_label_maps(device: torch.device, split: ResidentSplit, sizes: Sizes) -> str:
    from steps.train.label_maps import opencv_label_maps, torch_label_maps
    from steps.train.tasks import WEIGHT_SIGMA

    if split.label is None:
        raise Skip("no labels")
    labels = split.label[torch.arange(sizes.maps_batch, device=split.device) % len(split)].to(device)
    torch_label_maps(labels[:1], WEIGHT_SIGMA)  # warm-up (kernels, allocator)
    synchronize(device)
    started = time.perf_counter()
    weights, distances = torch_label_maps(labels, WEIGHT_SIGMA)
    synchronize(device)
    milliseconds = 1000 * (time.perf_counter() - started)
    rows = labels[: sizes.maps_rows].cpu()
    cv_weights, cv_distances = opencv_label_maps(rows, WEIGHT_SIGMA)
    # Under the training's backend settings (configure_backends: TF32 convolutions on CUDA).
    weight_error = float((weights[: sizes.maps_rows].cpu() - cv_weights).abs().max())
    distance_error = float((distances[: sizes.maps_rows].cpu() - cv_distances).abs().max())
    detail = (f"{milliseconds:.1f} ms per batch of {sizes.maps_batch} on {device.type}; max |torch - OpenCV| on "
              f"{sizes.maps_rows} rows: weights {weight_error:.2e}, distance maps {distance_error:.2e}")
    if max(weight_error, distance_error) > 1e-4:
        raise AssertionError(detail + " (> 1e-4)")
    return detail


def check_process_group(device: torch.device, split: ResidentSplit, sizes: Sizes) -> str:
    import torch.distributed as dist

    backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and not dist.is_nccl_available():
        raise AssertionError("NCCL is not available in this torch build")
    with tempfile.TemporaryDirectory() as folder:
        dist.init_process_group(backend, init_method=f"file://{folder}/rendezvous", world_size=1, rank=0)
        try:
            tensor = torch.full((4,), 3.0, device=device)
            dist.all_reduce(tensor)
            synchronize(device)
            if not torch.equal(tensor.cpu(), torch.full((4,), 3.0)):
                raise AssertionError(f"all_reduce over one process changed the tensor: {tensor.tolist()}")
        finally:
            dist.destroy_process_group()
    return f"{backend}: init_process_group(world_size=1), all_reduce, destroy_process_group"


CHECKS: dict[str, Callable[[torch.device, ResidentSplit, Sizes], str]] = {
    "amp fp16 + GradScaler": check_amp_fp16,
    "channels_last": check_channels_last,
    "pinned memory": check_pinned,
    "ConfusionMatrix on the device": check_confusion_matrix,
    "torch label maps on the device": check_label_maps,
    "process group (nccl; gloo on cpu)": check_process_group,
    "torch.compile": check_compile,  # last: compiling takes minutes
}


def run_checks(device: torch.device, split: ResidentSplit, sizes: Sizes,
               log: Callable[[str], None]) -> list[dict[str, str]]:
    results = []
    for name, check in CHECKS.items():
        try:
            status, detail = "PASS", check(device, split, sizes)
        except Skip as reason:
            status, detail = "SKIP", str(reason)
        except Exception as error:  # noqa: BLE001 - every check reports; the exit code carries failures
            status, detail = "FAIL", f"{type(error).__name__}: {error}"[:500]
            traceback.print_exc()
        log(f"  {status:4s} {name:36s} {detail}")
        results.append({"check": name, "status": status, "detail": detail})
    return results


# ---------------------------------------------------------------- main

def machine(device: torch.device) -> dict[str, Any]:
    facts: dict[str, Any] = {"torch": torch.__version__, "device": str(device), "cpu_count": os.cpu_count(),
                             "cuda": torch.version.cuda}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        facts.update(gpu=properties.name, gpu_memory_gib=round(properties.total_memory / 2**30, 1),
                     bf16=torch.cuda.is_bf16_supported(), cudnn=torch.backends.cudnn.version())
    return facts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m steps.bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (batch 2, 2 steps, compile off)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="where to run (default cuda)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results (default {DEFAULT_JSON})")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing measured (use --device cpu --quick for the CPU smoke run)", file=sys.stderr)
        return 2
    device = torch.device(args.device, 0) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    configure_backends(device, deterministic=False)
    sizes = QUICK if args.quick else FULL
    with torch_threads(CPU_THREADS if device.type == "cpu" else None):
        return run(args, device, sizes)


def run(args: argparse.Namespace, device: torch.device, sizes: Sizes) -> int:
    """The sections cheapest first, compiling (minutes) last; the JSON is rewritten after each
    section, so a run stopped by its time limit still leaves what it measured."""
    started = time.perf_counter()
    report: dict[str, Any] = {"quick": args.quick, "machine": machine(device), "sizes": asdict(sizes), "speed": [],
                              "data_paths": [], "data_path_error": None, "checks": [], "failed": [], "complete": False}

    def log(line: str) -> None:
        print(line, flush=True)

    def save() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    log(f"machine: {json.dumps(report['machine'])}")
    rows = max(max(sizes.batches), sizes.maps_batch)
    split = ResidentSplit(generated_rows(rows, sizes.unique_frames), device, seed=0, augment=True)
    log(f"training images/s (resident batches, {sizes.warmup} warm-up + {sizes.steps} timed steps):")
    report["speed"] = speed_table(device, replace(sizes, compile_batches=()), split, log)
    save()
    log(f"data path, {DEFAULT_MODEL}, batch {sizes.data_batch}, one epoch of {sizes.loader_batches} batches:")
    data_rows = generated_rows(sizes.loader_batches * sizes.data_batch, sizes.unique_frames, seed=1)
    try:
        report["data_paths"] = data_paths(device, sizes, data_rows, log)
    except Exception as error:  # noqa: BLE001 - the checks still run
        report["data_path_error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
        log(f"  data path FAILED: {report['data_path_error']}")
    save()
    log("checks:")
    report["checks"] = run_checks(device, split, sizes, log)
    save()
    if sizes.compile_batches:
        log(f"torch.compile ({DEFAULT_MODEL}, bf16, channels_last):")
        report["speed"] += speed_table(device, replace(sizes, models=(DEFAULT_MODEL,), configs=(),
                                                       batches=sizes.compile_batches), split, log)
    failed = [c["check"] for c in report["checks"] if c["status"] == "FAIL"]
    failed += ["data path"] if report["data_path_error"] else []
    failed += [f"{s['model']} batch {s['batch']}" for s in report["speed"]
               if "error" in s and "out of memory" not in s["error"]]
    report.update(failed=failed, complete=True)
    save()
    log(f"{'FAILED: ' + ', '.join(failed) if failed else 'all checks passed'}; {report['seconds']} s; JSON: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
