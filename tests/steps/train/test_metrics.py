"""Metrics against hand computations: whole-epoch confusion-matrix IoU and the ellipse metrics."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from steps.data.frames import IMAGE_HEIGHT, IMAGE_WIDTH, MAX_RADIUS
from steps.train.metrics import ConfusionMatrix, RunningMeans, ellipse_iou, ellipse_metrics


def test_confusion_matrix_matches_a_hand_computation():
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    pred = torch.tensor([[0, 1, 1, 0], [0, 1, 1, 1]])
    matrix = ConfusionMatrix(2)
    matrix.update(pred, target)
    # rows = target, columns = prediction
    assert matrix.matrix.tolist() == [[2, 1], [1, 4]]
    result = matrix.compute()
    # background: tp 2, union 2 + 1 + 1 = 4; pupil: tp 4, union 4 + 1 + 1 = 6
    assert result["iou_per_class"] == pytest.approx([2 / 4, 4 / 6])
    assert result["miou"] == pytest.approx((2 / 4 + 4 / 6) / 2)
    assert result["pixel_acc"] == pytest.approx(6 / 8)


def test_epoch_iou_is_accumulated_not_averaged_per_batch():
    # batch 1: a large pupil predicted perfectly; batch 2: a 1-pixel pupil missed entirely
    big_target = torch.zeros(1, 10, 10, dtype=torch.long)
    big_target[0, :5] = 1
    small_target = torch.zeros(1, 10, 10, dtype=torch.long)
    small_target[0, 0, 0] = 1
    matrix = ConfusionMatrix(2)
    matrix.update(big_target.clone(), big_target)
    matrix.update(torch.zeros_like(small_target), small_target)
    pupil_iou = matrix.compute()["iou_per_class"][1]
    assert pupil_iou == pytest.approx(50 / 51)  # per-batch averaging would give (1 + 0) / 2
    per_batch = ConfusionMatrix(2)
    per_batch.update(torch.zeros_like(small_target), small_target)
    assert per_batch.compute()["iou_per_class"][1] == 0.0


def test_class_absent_from_target_and_prediction_is_left_out_of_the_mean():
    matrix = ConfusionMatrix(3)
    matrix.update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    result = matrix.compute()
    assert math.isnan(result["iou_per_class"][2])
    assert result["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_confusion_matrix_state_round_trip():
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([1, 0, 1]), torch.tensor([1, 1, 1]))
    restored = ConfusionMatrix(2)
    restored.load_state_dict(matrix.state_dict())
    assert torch.equal(restored.matrix, matrix.matrix)


def test_running_means_weight_by_batch_size():
    means = RunningMeans()
    means.add_means({"loss": torch.tensor(1.0)}, 3)
    means.add_means({"loss": torch.tensor(3.0)}, 1)
    assert means.compute() == {"loss": pytest.approx((3 * 1.0 + 1 * 3.0) / 4)}
    copy = RunningMeans()
    copy.load_state_dict(means.state_dict())
    assert copy.compute() == means.compute()


def normalized(cx: float, cy: float, rx: float, ry: float) -> list[float]:
    return [cx / IMAGE_WIDTH, cy / IMAGE_HEIGHT, rx / MAX_RADIUS, ry / MAX_RADIUS]


def test_ellipse_metrics_by_hand():
    target = torch.tensor([normalized(320, 200, 40, 30), normalized(100, 100, 20, 20)])
    pred = torch.tensor([normalized(323, 204, 40, 30), normalized(100, 100, 10, 10)])
    metrics = ellipse_metrics(pred, target)
    assert metrics["center_error_px"] == pytest.approx((5 + 0) / 2, abs=1e-3)   # a 3-4-5 shift
    assert metrics["radius_error_px"] == pytest.approx((0 + 10) / 2, abs=1e-3)
    # concentric circles r=10 inside r=20: IoU = 1/4 (up to pixel discretization)
    ious = ellipse_iou(pred[1:] * torch.tensor([IMAGE_WIDTH, IMAGE_HEIGHT, MAX_RADIUS, MAX_RADIUS]),
                       target[1:] * torch.tensor([IMAGE_WIDTH, IMAGE_HEIGHT, MAX_RADIUS, MAX_RADIUS]))
    assert ious[0] == pytest.approx(0.25, abs=0.01)


def test_ellipse_metrics_identical_and_disjoint():
    target = torch.tensor([normalized(320, 200, 40, 30)])
    assert ellipse_metrics(target, target) == {"center_error_px": 0.0, "radius_error_px": 0.0, "ellipse_iou": 1.0}
    far = torch.tensor([normalized(100, 100, 20, 20)])
    assert ellipse_metrics(far, target)["ellipse_iou"] == 0.0
    negative = torch.tensor([normalized(320, 200, -40, 30)])
    assert ellipse_metrics(negative, target)["ellipse_iou"] == 0.0


def test_ellipse_iou_agrees_with_opencv_rasterization():
    a, b = (300.4, 210.7, 55.2, 38.9), (318.1, 199.3, 47.5, 44.0)

    def mask(cx, cy, rx, ry):
        canvas = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
        shift = 8  # sub-pixel centers and axes
        cv2.ellipse(canvas, (round((cx - 0.5) * 2**shift), round((cy - 0.5) * 2**shift)),
                    (round(rx * 2**shift), round(ry * 2**shift)), 0, 0, 360, 1, -1, cv2.LINE_8, shift)
        return canvas.astype(bool)

    ma, mb = mask(*a), mask(*b)
    reference = (ma & mb).sum() / (ma | mb).sum()
    ours = ellipse_metrics(torch.tensor([normalized(*a)]), torch.tensor([normalized(*b)]))["ellipse_iou"]
    assert ours == pytest.approx(reference, abs=0.01)


def test_ellipse_metrics_refuses_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        ellipse_metrics(torch.zeros(3, 4), torch.zeros(3, 5))


def test_predicted_classes_equals_argmax_with_ties_to_the_lower_class():
    from steps.train.metrics import predicted_classes

    logits = torch.randn(2, 2, 5, 7)
    logits[0, :, 0, 0] = 0.0  # a tie
    assert torch.equal(predicted_classes(logits), logits.argmax(dim=1))
    three = torch.randn(1, 3, 4, 4)
    assert torch.equal(predicted_classes(three), three.argmax(dim=1))


def test_ellipse_iou_counts_only_the_part_inside_the_frame():
    on_edge = torch.tensor([[0.0, 200.0, 40.0, 40.0]])  # half of it lies left of the frame
    shifted = torch.tensor([[-10.0, 200.0, 40.0, 40.0]])
    iou = float(ellipse_iou(on_edge, shifted)[0])
    # inside the frame: a half disc vs a smaller cap of the same circle shifted 10 px left
    canvas_a = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), np.uint8)
    canvas_b = np.zeros_like(canvas_a)
    cv2.circle(canvas_a, (0, 200), 40, 1, -1)
    cv2.circle(canvas_b, (-10, 200), 40, 1, -1)
    reference = (canvas_a & canvas_b).sum() / (canvas_a | canvas_b).sum()
    assert iou == pytest.approx(reference, abs=0.03)
