"""train-ellipse: train EllipseRegressionNet on normalized (cx, cy, rx, ry) (see steps.train.fit).

The step's glue is train-seg's: the contract's `model` setting picks the task, loss and metrics.
"""

from steps.train_seg import HOOKS

__all__ = ["HOOKS"]
