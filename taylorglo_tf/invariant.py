"""The validity pre-screen (invariant) of a third-order TaylorGLO loss (NumPy only).

From the authors' code (follow-up paper "Effective Regularization Through
Loss-Function Metalearning"). For ``inputs=("x", "y")``, order 3, the per-class
derivative ``g(x, y) = df/dy`` of the trimmed expansion is the quadratic::

    g(x, y) = c1 + ch y + chh y^2 + cy x + cyy x^2 + chy x y

with folded coefficients ``p = paper_to_folded(theta)`` (``p0, p1`` the centres)::

    c1  = -2 p1 p3 + 2 p0 p1 p6 + p2 - p5 p0 + p7 p0^2 + 3 p4 p1^2
    ch  = 2 p3 - 2 p6 p0 - 6 p4 p1        chh = 3 p4
    chy = 2 p6     cy = -2 p1 p6 + p5 - 2 p7 p0     cyy = p7

A theta is valid for ``n`` classes iff ``cy + cyy + chy/n >= (n - 2)(c1 + ch/n + chh/n^2)``,
i.e. ``g(1, 1/n) >= (n - 1) g(0, 1/n)``: at the uniform prediction the loss must
pull the true class's probability up at least (n-1) times harder than each other
class's. Invalid candidates can be scored worst without training.

It is a heuristic, stricter than what a softmax output needs: there a gradient
step raises the true class's logit at the uniform prediction iff
``g(1, 1/n) > g(0, 1/n)``. The order-3 Taylor approximation of cross-entropy at
(0.5, 0.5) (theta ``<0.5, 0.5, 1, -2, 8, 2, -4, 0>``) has ``g(1, y) = 5 - 8y + 4y^2``
and ``g(0, y) = (1 - 2y)^2``; it passes for up to 8 classes and fails from 9 on
(10 classes: 4.24 < 9 * 0.64), yet it trains (tests/losses/test_loss_training.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from taylorglo_tf.taylor import DEFAULT_INPUTS, DEFAULT_ORDER, Expansion

_EXPANSION = Expansion(DEFAULT_INPUTS, DEFAULT_ORDER, trimmed=True)  # the paper's form, the rule's only one


def invariant_margin(theta: Any, num_classes: int) -> float:
    """``(cy + cyy + chy/n) - (n - 2)(c1 + ch/n + chh/n^2)``; the theta is valid iff this is >= 0.

    ``theta``: 8 numbers, paper convention (order 3, inputs ``("x", "y")``).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    try:
        folded = _EXPANSION.to_folded(theta)
    except ValueError as exc:
        raise ValueError(f"the invariant is defined for order-3 losses in (x, y) only: {exc}") from None
    p0, p1, p2, p3, p4, p5, p6, p7 = folded
    n = float(num_classes)
    c1 = -2 * p1 * p3 + 2 * p0 * p1 * p6 + p2 - p5 * p0 + p7 * p0**2 + 3 * p4 * p1**2
    ch = 2 * p3 - 2 * p6 * p0 - 6 * p4 * p1
    chh = 3 * p4
    chy = 2 * p6
    cy = -2 * p1 * p6 + p5 - 2 * p7 * p0
    cyy = p7
    return float((cy + cyy + chy / n) - (n - 2) * (c1 + ch / n + chh / n**2))


def is_valid(theta: Any, num_classes: int) -> bool:
    """Whether ``theta`` (8 numbers, paper convention) passes the pre-screen for ``num_classes`` classes."""
    return invariant_margin(theta, num_classes) >= 0.0
