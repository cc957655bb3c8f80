"""The predict step end to end through onnxruntime: images of any size, folders, videos, saved
splits and checkpoints in; ellipses, masks and annotated outputs out; bad input named in one line."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from contracts import Layout, get_contract
from steps.data.transforms import Ellipse
from steps.runtime import run_step
from tests.steps.data.test_geometry import assert_same
from tests.steps.inference.dark_model import dark_pupil_onnx, eye_frame

DRAWN = {"small": (320, 240, (150.0, 130.0, 22.0, 15.0, 30.0)),
         "portrait": (400, 640, (210.0, 300.0, 40.0, 28.0, 100.0)),
         "openeds": (640, 400, (300.0, 210.0, 45.0, 38.0, 10.0))}


@pytest.fixture(scope="module")
def dark_model(tmp_path_factory):
    return dark_pupil_onnx(tmp_path_factory.mktemp("model") / "onnx" / "dark.onnx").parent


def predict(root, model, source, **hp):
    layout = Layout.resolve(root, channels={"model": model, "input": source})
    code = run_step("predict", layout, hp)
    failure = layout.failure_file.read_text() if layout.failure_file.exists() else ""
    return code, root / "output" / "data" / "predictions", failure


def rows(out):
    with open(out / "ellipses.csv", newline="") as handle:
        return {row["frame"]: row for row in csv.DictReader(handle)}


def as_ellipse(row):
    return Ellipse(*(float(row[k]) for k in ("cx", "cy", "rx", "ry", "angle")), "fit")


@pytest.mark.parametrize("policy", ["pad", "crop", "resize"])
def test_ellipses_in_frames_of_any_size_come_back_in_frame_pixels(tmp_path, dark_model, policy):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, (w, h, ellipse) in DRAWN.items():
        cv2.imwrite(str(frames / f"{name}.png"), eye_frame(w, h, ellipse))
    code, out, failure = predict(tmp_path / "run", dark_model, frames, geometry=policy)
    assert code == 0, failure
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["geometry"] == policy and manifest["frame_sizes"] == {"320x240": 1, "400x640": 1, "640x400": 1}
    found = rows(out)
    assert set(found) == set(DRAWN)
    for name, (w, h, ellipse) in DRAWN.items():
        row = found[name]
        assert (int(row["width"]), int(row["height"])) == (w, h) and row["pupil"] == "True"
        assert_same(as_ellipse(row), Ellipse(*ellipse, "fit"), centre=1.0, axes=1.5, angle=3.0)
        assert float(row["confidence"]) > 0.8
        mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED)
        truth = eye_frame(w, h, ellipse) < 60
        assert mask.shape == (h, w) and set(np.unique(mask)) == {0, 255}
        assert ((mask > 0) & truth).sum() / ((mask > 0) | truth).sum() > 0.9
    lines = [json.loads(line) for line in (out / "ellipses.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(found)
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    assert sheet.shape[1] == 3 * 320 and sheet.shape[2] == 3
    summary = json.loads((tmp_path / "run" / "output" / "manifest.json").read_text())["summary"]
    assert summary["frames"] == 3 and summary["pupils_found"] == 3 and summary["frames_per_s"] > 0


def assert_the_dark_pupil(row, out, given, inside):
    """The row's ellipse is an independent fit of the dark pixels `inside` the given frame, and its
    mask covers them (IoU > 0.9) and nothing outside."""
    truth = ((given < 60) & inside).astype(np.uint8)
    contour = max(cv2.findContours(truth, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0], key=cv2.contourArea)
    (cx, cy), (width, height), angle = cv2.fitEllipse(contour)
    assert (int(row["width"]), int(row["height"])) == (given.shape[1], given.shape[0])
    assert_same(as_ellipse(row), Ellipse(cx, cy, width / 2, height / 2, angle, "fit"), centre=1.0, axes=1.5, angle=3.0)
    mask = cv2.imread(str(out / row["mask"]), cv2.IMREAD_UNCHANGED) > 0
    assert mask.shape == given.shape and not mask[~inside].any()
    assert (mask & (truth > 0)).sum() / (mask | (truth > 0)).sum() > 0.9


UPRIGHT = {"openeds": (640, 400, (300.0, 120.0, 40.0, 30.0, 10.0)), "square": (400, 400, (150.0, 110.0, 30.0, 24.0, 60.0))}


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_a_turned_camera_is_turned_upright_and_its_pupil_comes_back_in_its_own_frame(tmp_path, rotate):
    """A camera mounted turned: its frame is the upright view turned clockwise. The model finds
    pupils only in the upper half of its input (it knows which way is up), so it finds them only if
    `rotate` turned the frame back; the ellipse and mask are then the dark pupil's in the given frame."""
    upright_model = dark_pupil_onnx(tmp_path / "model" / "onnx" / "upright.onnx", upper_half_only=True).parent
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, (w, h, ellipse) in UPRIGHT.items():
        cv2.imwrite(str(frames / f"{name}.png"), np.rot90(eye_frame(w, h, ellipse), -rotate // 90))
    code, out, failure = predict(tmp_path / "run", upright_model, frames, rotate=rotate)
    assert code == 0, failure
    found = rows(out)
    if rotate == 180:  # as given, both pupils sit in the lower half: not found without the turn
        _, unturned, _ = predict(tmp_path / "unturned", upright_model, frames)
        assert [row["pupil"] for row in rows(unturned).values()] == ["False", "False"]
    for name in UPRIGHT:
        given = cv2.imread(str(frames / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        assert_the_dark_pupil(found[name], out, given, np.ones(given.shape, bool))


def two_dark_ellipses(width, height, pupil, distractor):
    image = eye_frame(width, height, pupil)
    cx, cy, rx, ry, angle = distractor
    cv2.ellipse(image, (round(cx), round(cy)), (round(rx), round(ry)), angle, 0, 360, 20, thickness=-1)
    return image


@pytest.mark.parametrize("rotate", [0, 90])
def test_a_region_of_interest_is_all_the_model_sees_and_its_pupil_comes_back_in_the_whole_frame(tmp_path, rotate):
    """Each frame: a small pupil inside the region and a larger dark blob outside it. The whole frame's
    largest dark component is the blob; with `roi` the model sees only the region, and the pupil's
    ellipse and mask come back where it was drawn in the whole frame (nothing outside the region). A
    frame the region does not fit in is skipped, naming the frame and the region. With `rotate` the
    frames are the upright view turned clockwise, the region is given in them, and the model finds
    pupils only in the upper half of its input: it is found only if the region is turned upright."""
    model = dark_pupil_onnx(tmp_path / "model" / "onnx" / "up.onnx", upper_half_only=bool(rotate)).parent
    x, y, w, h = 200, 60, 320, 200  # upright: the pupil sits in the region's upper half
    pupil, blob = (330.0, 130.0, 14.0, 11.0, 20.0), (80.0, 300.0, 50.0, 40.0, 0.0)
    sizes = {"openeds": (640, 400)} if rotate else {"openeds": (640, 400), "wide": (800, 480)}
    roi = [400 - y - h, x, h, w] if rotate else [x, y, w, h]  # in the 640x400 frame turned clockwise
    frames = tmp_path / "frames"
    frames.mkdir()
    for name, (width, height) in sizes.items():
        cv2.imwrite(str(frames / f"{name}.png"), np.rot90(two_dark_ellipses(width, height, pupil, blob), -rotate // 90))
    cv2.imwrite(str(frames / "small.png"), eye_frame(300, 240, pupil))
    code, out, failure = predict(tmp_path / "run", model, frames, roi=roi, rotate=rotate)
    assert code == 0, failure
    found = rows(out)
    rx, ry, rw, rh = roi
    for name in sizes:
        given = cv2.imread(str(frames / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
        inside = np.zeros(given.shape, bool)
        inside[ry:ry + rh, rx:rx + rw] = True
        assert_the_dark_pupil(found[name], out, given, inside)
    skipped = {s["frame"]: s["error"] for s in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert skipped == {"small": f"small: roi {roi} reaches past the 300x240 frame"}
    if not rotate:  # without the region, the blob outside it is taken for the pupil
        _, whole, _ = predict(tmp_path / "whole", model, frames)
        assert abs(float(rows(whole)["openeds"]["cx"]) - blob[0]) < 3


def write_video(path, frames, codec="MJPG", fps=15.0):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def moving_pupil(count):
    return [eye_frame(320, 240, (100.0 + 10 * k, 120.0, 20.0, 16.0, 0.0), seed=k) for k in range(count)]


def test_a_video_gives_one_row_per_frame_and_an_annotated_video(tmp_path, dark_model):
    video = write_video(tmp_path / "eye.avi", moving_pupil(8))
    code, out, failure = predict(tmp_path / "run", dark_model, video, masks=False)
    assert code == 0, failure
    found = rows(out)
    assert list(found) == [f"eye_f{k:06d}" for k in range(8)]
    centres = [float(row["cx"]) for row in found.values()]
    assert np.allclose(centres, [100 + 10 * k for k in range(8)], atol=1.5)  # JPEG-compressed frames
    annotated = cv2.VideoCapture(str(out / "annotated.mp4"))
    assert annotated.get(cv2.CAP_PROP_FRAME_COUNT) == 8 and annotated.get(cv2.CAP_PROP_FPS) == 15
    assert not (out / "masks").exists()


def corrupt_mjpeg_frame(path, index):
    """Overwrite the start of the `index`-th JPEG of an MJPG AVI: OpenCV cannot decode that frame."""
    data = bytearray(path.read_bytes())
    starts = [k for k in range(len(data) - 1) if data[k] == 0xFF and data[k + 1] == 0xD8]
    data[starts[index]:starts[index] + 2000] = bytes(2000)
    path.write_bytes(bytes(data))


def frames_with_a_truncated_one(tmp_path, count, truncated):
    """A folder of `count` moving-pupil frames f0.png, f1.png, ...; f<truncated>.png cut to 60 bytes."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, frame in enumerate(moving_pupil(count)):
        cv2.imwrite(str(frames / f"f{k}.png"), frame)
    broken = frames / f"f{truncated}.png"
    broken.write_bytes(broken.read_bytes()[:60])
    return frames


def test_corrupt_frames_in_a_folder_or_video_are_reported_and_skipped(tmp_path, dark_model):
    frames = frames_with_a_truncated_one(tmp_path, 3, truncated=1)
    video = write_video(frames / "clip.avi", moving_pupil(6))
    corrupt_mjpeg_frame(video, 2)
    code, out, failure = predict(tmp_path / "run", dark_model, frames)
    assert code == 0, failure
    assert set(rows(out)) == {"f0", "f2", *(f"clip_f{k:06d}" for k in (0, 1, 3, 4, 5))}
    skipped = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert [s["frame"] for s in skipped] == ["f1", "clip_f000002"]
    assert "f1.png: not a readable image" in skipped[0]["error"] and "frame 2 could not be decoded" in skipped[1]["error"]


def test_frames_whose_names_collide_each_keep_their_own_row_and_mask(tmp_path, dark_model):
    """a.png / a.bmp and x/y.png / x_y.png flatten to one name: each frame still gets its own row and
    mask (the later one renamed), each showing its own pupil."""
    drawn = {"a.png": (150.0, 130.0), "a.bmp": (400.0, 250.0), "x/y.png": (200.0, 300.0), "x_y.png": (500.0, 120.0)}
    frames = tmp_path / "frames"
    (frames / "x").mkdir(parents=True)
    for file, (cx, cy) in drawn.items():
        cv2.imwrite(str(frames / file), eye_frame(640, 400, (cx, cy, 30.0, 25.0, 0.0)))
    code, out, failure = predict(tmp_path / "run", dark_model, frames)
    assert code == 0, failure
    found = rows(out)
    # Sorted by path: a.bmp before a.png, x/y.png before x_y.png.
    expected = {"a": drawn["a.bmp"], "a~2": drawn["a.png"], "x_y": drawn["x/y.png"], "x_y~2": drawn["x_y.png"]}
    assert set(found) == set(expected) and len({row["mask"] for row in found.values()}) == 4
    for name, (cx, cy) in expected.items():
        assert abs(float(found[name]["cx"]) - cx) < 1 and abs(float(found[name]["cy"]) - cy) < 1
        ys, xs = np.nonzero(cv2.imread(str(out / found[name]["mask"]), cv2.IMREAD_UNCHANGED))
        assert abs(xs.mean() - cx) < 1 and abs(ys.mean() - cy) < 1


def test_max_frames_counts_predicted_frames_not_skipped_ones(tmp_path, dark_model):
    frames = frames_with_a_truncated_one(tmp_path, 4, truncated=0)
    code, out, failure = predict(tmp_path / "run", dark_model, frames, max_frames=2)
    assert code == 0, failure
    assert set(rows(out)) == {"f1", "f2"}


def test_frames_outside_the_size_bounds_are_skipped_before_decoding(tmp_path, dark_model):
    """Under 32 px a side no pupil is measurable; a header claiming 100000 px a side is refused from
    the header alone; a 16-bit frame is named, not guessed at; the good frame is still predicted."""
    frames = tmp_path / "frames"
    frames.mkdir()
    good = moving_pupil(1)[0]
    cv2.imwrite(str(frames / "good.png"), good)
    cv2.imwrite(str(frames / "tiny.png"), cv2.resize(good, (16, 12)))
    cv2.imwrite(str(frames / "deep.png"), good.astype(np.uint16) * 257)
    data = bytearray((frames / "good.png").read_bytes())
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width, height; the pixel data stays small
    (frames / "huge.png").write_bytes(bytes(data))
    write_video(frames / "small.avi", [cv2.resize(good, (24, 16))] * 3)
    code, out, failure = predict(tmp_path / "run", dark_model, frames)
    assert code == 0, failure
    assert set(rows(out)) == {"good"}
    errors = {s["frame"]: s["error"] for s in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert set(errors) == {"tiny", "deep", "huge", "small"}
    assert "tiny.png: frame 16x12: expected at least 32 and at most 4096 pixels a side" in errors["tiny"]
    assert "huge.png: frame 100000x100000: expected at least 32" in errors["huge"]
    assert "deep.png: pixel type uint16, expected 8-bit" in errors["deep"]
    assert "small.avi: frame 24x16: expected at least 32" in errors["small"]


def test_16_bit_frames_predict_like_8_bit_ones_with_their_bit_depth(tmp_path, dark_model):
    """A Mono12 camera's frames (0..4095 in 16-bit files) and full-range 16-bit ones give the ellipse
    of the 8-bit frame they were made from; without input_bits they are skipped, naming the fix."""
    frame = moving_pupil(1)[0]
    low_bits = np.random.default_rng(0).integers(0, 16, frame.shape).astype(np.uint16)  # below 8-bit precision
    folders = {"eight": frame, "mono12": (frame.astype(np.uint16) << 4) | low_bits,
               "full16": frame.astype(np.uint16) * 257}
    found = {}
    for name, image in folders.items():
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "eye.png"), image)
    for name, bits in (("eight", 8), ("mono12", 12), ("full16", 16)):
        code, out, failure = predict(tmp_path / f"run-{name}", dark_model, tmp_path / name, input_bits=bits)
        assert code == 0, failure
        found[name] = as_ellipse(rows(out)["eye"])
    assert_same(found["mono12"], found["eight"], 1e-6, 1e-6, 1e-6)
    assert_same(found["full16"], found["eight"], 1e-6, 1e-6, 1e-6)
    code, _, failure = predict(tmp_path / "run-default", dark_model, tmp_path / "mono12")
    assert code != 0  # no frame read: one line saying why
    assert "no frame could be read (1 skipped, the first: " in failure.splitlines()[0]
    assert "eye.png: pixel type uint16, expected 8-bit (for 10- to 16-bit frames set input_bits)" in failure.splitlines()[0]


def test_bad_inputs_fail_with_one_line_naming_them(tmp_path, dark_model):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    not_video = tmp_path / "clip.mp4"
    not_video.write_bytes(b"\x00" * 4096)
    wrong_task = dark_pupil_onnx(tmp_path / "ellipse" / "ellipse.onnx", task="ellipse")
    image = tmp_path / "ok.png"
    cv2.imwrite(str(image), moving_pupil(1)[0])
    cases = [(dark_model, broken, f"{broken}: not a readable image"),
             (dark_model, not_video, f"{not_video}: video will not open"),
             (wrong_task, image, f"{wrong_task}: a model of task 'ellipse', expected a segmentation model"),
             (dark_model, tmp_path, "no image"),]
    for k, (model, source, expected) in enumerate(cases):
        if source == tmp_path:
            source = tmp_path / "empty"
            source.mkdir()
            (source / "notes.txt").write_text("no frames")
        code, _, failure = predict(tmp_path / f"run{k}", model, source)
        assert code == 2
        first = failure.splitlines()[0]
        assert expected in first, first


def test_a_saved_split_and_a_checkpoint_predict_like_the_exported_model(tmp_path):
    """train-seg's model folder (checkpoint backend) and its ONNX export agree on a saved split
    (preprocessed rows: their gamma+CLAHE image is used as stored, never enhanced twice)."""
    from tests.steps.export.model_folders import exported_folder
    from tests.steps.train.tiny_data import make_split

    channels = exported_folder(tmp_path / "models", {"seg_model": "tiny_efficientvit_micro"})
    split = tmp_path / "split"
    make_split(3, seed=2).save_to_disk(str(split))
    results = {}
    for backend, model in (("onnx", channels["onnx"]), ("checkpoint", channels["seg_model"])):
        code, out, failure = predict(tmp_path / backend, model, split, backend=backend, max_area_fraction=1.0,
                                     min_area_px=1, min_axis_ratio=0.01)
        assert code == 0, failure
        results[backend] = rows(out)
    assert len(results["onnx"]) == 3 and list(results["onnx"]) == list(results["checkpoint"])
    for name, row in results["onnx"].items():
        other = results["checkpoint"][name]
        assert abs(int(row["mask_area_px"]) - int(other["mask_area_px"])) <= 5
        assert abs(float(row["confidence"]) - float(other["confidence"])) < 1e-3


def test_predict_is_a_kfp_component_too():
    from pipelines.kfp_components import component_spec, component_yaml

    text = component_yaml(component_spec(get_contract("predict")))
    assert "predict" in text and "input" in text and "predictions" in text


def test_the_generated_sample_video_has_the_frames_asked_for(tmp_path):
    from steps.inference.sample_video import main

    assert main([str(tmp_path / "demo.mp4"), "--frames", "3", "--width", "320", "--height", "200"]) == 0
    capture = cv2.VideoCapture(str(tmp_path / "demo.mp4"))
    shapes = []
    while (frame := capture.read()[1]) is not None:
        shapes.append(frame.shape)
    assert shapes == [(200, 320, 3)] * 3
