"""Annotated outputs: a frame of another size in a video is shown whole, its aspect kept."""

from __future__ import annotations

import cv2
import numpy as np

from steps.inference.annotate import fit_inside


def test_a_portrait_frame_in_a_landscape_video_is_fitted_not_stretched():
    portrait = np.full((320, 240, 3), 200, np.uint8)
    cv2.circle(portrait, (120, 160), 60, (0, 0, 0), -1)  # a round blob stays round
    fitted = fit_inside(portrait, (320, 240))
    assert fitted.shape == (240, 320, 3)
    columns = np.nonzero(fitted[:, :, 0].max(axis=0))[0]
    assert (columns.min(), columns.max()) == (70, 249)  # 180 px wide, centred; black bars either side
    ys, xs = np.nonzero(fitted[:, :, 0][:, 70:250] < 100)
    assert abs((xs.max() - xs.min()) - (ys.max() - ys.min())) <= 2  # still a circle (90 px across)
    assert fit_inside(np.full((100, 200), 9, np.uint8), (400, 200)).shape == (200, 400)
