"""Reading frames for predict: what a file claims is checked before it is decoded, and pixels of
other bit depths are taken only as the user says they are."""

from __future__ import annotations

import cv2
import datasets
import numpy as np
import pytest
from PIL import Image, ImageOps

from steps.inference.model_input import to_8bit
from steps.inference.sources import SourceError, open_source, read_image_file


def test_a_file_that_cannot_be_opened_is_one_source_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match=f"{tmp_path / 'gone.png'}: cannot be read"):
        read_image_file(tmp_path / "gone.png")


def test_16_bit_pixels_are_scaled_by_their_bit_depth_and_never_saturated_silently():
    mono12 = np.array([[0, 15, 16, 4095]], np.uint16)
    assert to_8bit(mono12, 12).tolist() == [[0, 0, 1, 255]]      # the low 4 bits dropped
    assert to_8bit(mono12 << 4, 16).tolist() == [[0, 0, 1, 255]]  # the same data in the high bits
    with pytest.raises(ValueError, match="pixel values up to 65520 exceed input_bits 12 .*use input_bits 16"):
        to_8bit(mono12 << 4, 12)
    with pytest.raises(ValueError, match="for 10- to 16-bit frames set input_bits"):
        to_8bit(mono12, 8)
    with pytest.raises(ValueError, match=r"pixel type float32, expected 8-bit \(or 16-bit with input_bits\)"):
        to_8bit(mono12.astype(np.float32), 12)


def test_a_saved_split_row_outside_the_size_bounds_is_skipped_naming_it(tmp_path):
    frames = [np.full((400, 640), 120, np.uint8), np.full((16, 16), 120, np.uint8)]
    datasets.Dataset.from_dict({"image": frames, "filename": ["good.png", "tiny.png"]}).save_to_disk(str(tmp_path / "split"))
    kind, rows = open_source(tmp_path / "split", "preprocessed")
    first, second = list(rows)
    assert kind == "split" and first.image is not None and first.image.shape == (400, 640)
    assert second.image is None and "row 1 (tiny): frame 16x16: expected at least 32" in second.error


@pytest.mark.parametrize("orientation", range(1, 9))
def test_an_exif_orientation_is_applied_as_viewers_and_opencv_show_the_picture(tmp_path, orientation):
    stored = np.zeros((240, 320), np.uint8)
    stored[20:60, 30:120] = 255        # an asymmetric mark: any wrong turn or flip moves it
    stored[150:230, 250:300] = 128
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "frame.jpg"
    Image.fromarray(stored).save(path, quality=100, exif=exif)
    shown = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("L")).astype(int)  # Pillow's own turn
    read = read_image_file(path).astype(int)
    assert read.shape == shown.shape == ((240, 320) if orientation < 5 else (320, 240))
    assert np.abs(read - shown).mean() < 2
    assert read.shape == cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape
