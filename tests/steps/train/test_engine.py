"""train_one_epoch on a toy task: gradient accumulation equals a larger batch (also for a short last
window), clipping bounds the step, a stop request is honoured only after an optimizer step, and a
non-finite loss stops training naming the batch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from steps.runtime import StepError
from steps.train.device import Precision
from steps.train.engine import StepConfig, evaluate, train_one_epoch
from steps.train.metrics import RunningMeans
from steps.train.optim import LRSchedule


class ToyTask:
    """Regress a per-pixel target with mean squared error; the 'metric' is the mean abs error."""

    name = "toy"

    def targets(self, batch, device):
        return {"target": batch["target"].to(device)}

    def loss(self, loss_fn, outputs, targets):
        return {"loss": loss_fn(outputs, targets["target"])}

    def new_metrics(self, device):
        return ToyMetric(device)

    def update_metrics(self, metrics, outputs, targets):
        metrics.update(outputs, targets["target"])

    def summarize(self, values, split):
        return {f"{split}_iou": values.get("abs_error", float("nan"))}


class ToyMetric:
    def __init__(self, device):
        self.means = RunningMeans(device)

    def update(self, pred, target):
        self.means.add_sums({"abs_error": (pred - target).abs().mean(dim=(1, 2, 3))}, pred.shape[0])

    def reduce_(self):
        self.means.reduce_()

    def compute(self):
        return self.means.compute()

    def state_dict(self):
        return self.means.state_dict()

    def load_state_dict(self, state):
        self.means.load_state_dict(state)


def batches(sizes: list[int], seed: int = 0) -> list[dict]:
    """Batches as the loader ships them: uint8 images (the engine normalizes them on the device)."""
    generator = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (n, 1, 4, 4), dtype=torch.uint8, generator=generator),
             "target": torch.randn(n, 1, 4, 4, generator=generator), "filename": [f"row{i}" for i in range(n)]}
            for n in sizes]


def trained(data: list[dict], accumulation: int = 1, clip: float | None = None, should_stop=None, meter=None):
    torch.manual_seed(0)
    model = nn.Conv2d(1, 1, 3, padding=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    config = StepConfig(device=torch.device("cpu"), precision=Precision(None, False),
                        accumulation_steps=accumulation, clip_grad_norm=clip)
    progress = train_one_epoch(model, ToyTask(), nn.MSELoss(), data, optimizer, LRSchedule(None, False, "none"),
                               config, epoch=1, should_stop=should_stop, meter=meter)
    return model, progress


def merged(parts: list[dict]) -> dict:
    return {key: torch.cat([p[key] for p in parts]) for key in ("image", "target")} | {"filename": []}


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for x, y in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_accumulation_equals_the_larger_batch_including_a_short_last_window():
    data = batches([2, 2, 2, 2, 2])
    accumulated, progress = trained(data, accumulation=2)
    reference, _ = trained([merged(data[0:2]), merged(data[2:4]), data[4]])
    assert_same_weights(accumulated, reference)
    assert progress.batches_done == 5 and progress.images == 10


def test_clipping_bounds_the_update():
    data = [{"image": torch.full((2, 1, 4, 4), 255, dtype=torch.uint8), "target": torch.full((2, 1, 4, 4), -100.0),
             "filename": []}]
    torch.manual_seed(0)
    before = [p.detach().clone() for p in nn.Conv2d(1, 1, 3, padding=1).parameters()]
    model, _ = trained(data, clip=0.5)
    step = float(torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before))))
    assert step == pytest.approx(0.1 * 0.5, rel=1e-4)  # lr x max norm


def test_stop_request_is_honoured_after_an_optimizer_step_only():
    _, progress = trained(batches([2, 2, 2, 2]), accumulation=2, should_stop=lambda: True)
    assert progress.stopped and progress.batches_done == 2  # never inside an accumulation window


def test_non_finite_loss_stops_naming_epoch_batch_and_rows():
    data = batches([2, 2, 2])
    data[1]["target"][0, 0, 0, 0] = float("nan")
    data[1]["filename"] = ["bad_a.png", "bad_b.png"]
    with pytest.raises(StepError, match=r"^train_loss is not finite at epoch 1 batch 2;(.|\n)*bad_a.png, bad_b.png"):
        trained(data)


def test_evaluate_averages_over_samples_not_batches():
    model = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.zeros_(model.weight)
    data = [{"image": torch.zeros(3, 1, 2, 2, dtype=torch.uint8), "target": torch.ones(3, 1, 2, 2)},
            {"image": torch.zeros(1, 1, 2, 2, dtype=torch.uint8), "target": torch.full((1, 1, 2, 2), 3.0)}]
    config = StepConfig(device=torch.device("cpu"), precision=Precision(None, False))
    values = evaluate(model, ToyTask(), nn.MSELoss(), data, config)
    assert values["valid_loss"] == pytest.approx((3 * 1.0 + 1 * 9.0) / 4)
    assert values["valid_iou"] == pytest.approx((3 * 1.0 + 1 * 3.0) / 4)


def test_progress_is_logged_every_n_batches_inside_the_epoch(caplog):
    from steps.train.progress import EpochMeter

    meter = EpochMeter(epoch=2, epochs=5, total_batches=7, every=3)
    with caplog.at_level("INFO", logger="steps.train.fit"):
        trained(batches([2] * 7), meter=meter)
    lines = [r.getMessage() for r in caplog.records if r.name == "steps.train.fit"]
    assert [line.split("  ")[1] for line in lines] == ["batch 3/7", "batch 6/7"]  # none at the epoch's end
    assert all(line.startswith("epoch 2/5  ") and " img/s  data " in line and " s per batch  ETA " in line
               for line in lines)
    assert (meter.batches, meter.images) == (7, 14) and meter.data_seconds >= 0 and meter.compute_seconds > 0
    quiet = EpochMeter(epoch=1, epochs=1, total_batches=7, every=0)
    caplog.clear()
    with caplog.at_level("INFO", logger="steps.train.fit"):
        trained(batches([2] * 7), meter=quiet)
    assert not [r for r in caplog.records if r.name == "steps.train.fit"]


def test_eta_is_the_mean_batch_time_times_the_batches_left():
    from steps.train.progress import EpochMeter, format_seconds

    meter = EpochMeter(epoch=1, epochs=1, total_batches=100, every=10, data_seconds=2.0, compute_seconds=8.0,
                       batches=10, images=80)
    assert meter.line(10).endswith("8.0 img/s  data 0.200 s + compute 0.800 s per batch  ETA 1 min 30 s")
    assert (format_seconds(12.34), format_seconds(3725)) == ("12.3 s", "1 h 02 min")
