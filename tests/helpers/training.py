"""Training tests' helpers: Taylor losses for a list of thetas."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def taylor_losses(thetas: Iterable[Sequence[float]]) -> list:
    """One TaylorGLOLoss per theta (the paper's default form)."""
    from taylorglo_tf.losses import TaylorGLOLoss

    return [TaylorGLOLoss(theta) for theta in thetas]
