"""Pupil Labs' classical 2D pupil detector (`pupil-detectors`, optional) as a reference predictor.

Install with `pip install 'openeds-steps[classical]'`. Without it, validate reports the detector as
not available and everything else runs. `Detector2D` keeps the last confident ellipse as a prior
for its next call (video mode, SPEC section 8), so each independent frame gets a fresh detector.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from steps.data.transforms import Ellipse
from steps.inference.pupil import filled_ellipse

NAME = "classical (pupil-detectors Detector2D)"
INSTALL_HINT = "pip install 'openeds-steps[classical]' (pupil-detectors) to compare with the classical detector"


def unavailable_reason() -> str | None:
    """None when pupil-detectors imports, else why it cannot (for the report): not installed, or
    installed but broken (a missing native library, a build for another Python)."""
    if importlib.util.find_spec("pupil_detectors") is None:
        return f"pupil-detectors is not installed; {INSTALL_HINT}"
    try:
        from pupil_detectors import Detector2D  # noqa: F401  # the one name detect() needs
    except Exception as error:  # any failure while importing a native extension's package
        reason = str(error).splitlines()[0] if str(error) else ""
        return f"pupil-detectors is installed but does not import ({type(error).__name__}: {reason}); reinstall it"
    return None


def detect(image: np.ndarray, min_confidence: float = 0.0) -> tuple[np.ndarray, Ellipse | None]:
    """(0/1 mask of the detected ellipse, the ellipse) for one uint8 camera frame; an empty mask and
    None when the detector reports no pupil (confidence <= `min_confidence`)."""
    from pupil_detectors import Detector2D  # optional dependency, imported only when used

    result = Detector2D().detect(np.ascontiguousarray(image, np.uint8))
    ellipse = result.get("ellipse") or {}
    axes = ellipse.get("axes", (0.0, 0.0))
    if result.get("confidence", 0.0) <= min_confidence or min(axes) <= 0:
        return np.zeros(image.shape, np.uint8), None
    (cx, cy), angle = ellipse["center"], ellipse["angle"]
    # Its axes are full lengths, in cv2.RotatedRect order (as cv2.fitEllipse): halve for radii.
    drawn = Ellipse(float(cx), float(cy), axes[0] / 2, axes[1] / 2, float(angle), "classical")
    return filled_ellipse(drawn, image.shape), drawn
