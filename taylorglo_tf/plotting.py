"""The paper's binary-classification view of a loss (Figure 3a), with matplotlib.

Two classes, true label ``x = (1, 0)``, prediction ``y = (y0, 1 - y0)``; the loss
is drawn over ``y0`` in [0, 1], shifted so that its value at ``y0 = 1`` is 0.

A loss may be given as a Keras loss object, a Keras config dict (full
serialization or a bare ``TaylorGLOLoss`` config), or a JSON file path.
TaylorGLO losses given as configs or files are evaluated in NumPy
(:func:`taylorglo_tf.taylor.reference_loss`), so plotting them needs no
TensorFlow; anything else goes through :func:`taylorglo_tf.losses.get`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.axes
import numpy as np
from matplotlib.figure import Figure

from taylorglo_tf import taylor

LossLike = Any  # keras.losses.Loss | Mapping[str, Any] | str | os.PathLike


def binary_view(loss: LossLike, num_points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """``(y0, L(y0) - L(1))`` for ``x = (1, 0)``, ``y = (y0, 1 - y0)``, ``y0`` on ``num_points`` points of [0, 1]."""
    if num_points < 2:
        raise ValueError(f"num_points must be at least 2, got {num_points}")
    y0 = np.linspace(0.0, 1.0, num_points)
    y_pred = np.stack([y0, 1.0 - y0], axis=-1)
    y_true = np.tile([1.0, 0.0], (num_points, 1))
    values = _per_sample_loss(loss, y_true, y_pred)
    return y0, values - values[-1]


def plot_losses(
    ax: matplotlib.axes.Axes,
    losses: Sequence[LossLike] | Mapping[str, LossLike],
    labels: Sequence[str] | None = None,
    num_points: int = 201,
    colors: Sequence[Any] | None = None,
    legend: bool = True,
) -> matplotlib.axes.Axes:
    """Draw several losses in the binary view on ``ax`` (one line each).

    ``colors`` (one matplotlib colour per loss) overrides the colour cycle, e.g.
    a colormap over generations; ``legend=False`` leaves the legend out.
    """
    if isinstance(losses, Mapping):
        labels, items = list(losses.keys()), list(losses.values())
    else:
        items = list(losses)
        labels = list(labels) if labels is not None else [_label(item) for item in items]
    if len(labels) != len(items):
        raise ValueError(f"{len(labels)} labels for {len(items)} losses")
    if colors is not None and len(colors) != len(items):
        raise ValueError(f"{len(colors)} colors for {len(items)} losses")
    visible = []
    for i, (item, label) in enumerate(zip(items, labels)):
        y0, values = binary_view(item, num_points)
        ax.plot(y0, values, label=label, color=None if colors is None else colors[i])
        visible.append(values[y0 >= 0.05])
    # Losses with a pole at y0 = 0 (Baikal, cross-entropy) would flatten every other curve.
    low, high = float(np.min(np.concatenate(visible))), float(np.max(np.concatenate(visible)))
    pad = 0.05 * max(high - low, 1e-12)
    ax.set_ylim(low - pad, high + pad)
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel("predicted probability of the true class, y0")
    ax.set_ylabel("loss - loss at y0 = 1")
    ax.axhline(0.0, color="0.8", linewidth=0.8, zorder=0)
    if items and legend:
        ax.legend()
    return ax


def plot_loss(loss: LossLike | Sequence[LossLike], out: str | os.PathLike, title: str | None = None) -> Path:
    """Save the binary view of one loss (or several) as an image file; returns the path."""
    items = list(loss) if isinstance(loss, (list, tuple)) else [loss]
    # A bare Figure (no pyplot): no global backend switch, nothing to close, works on servers.
    fig = Figure(figsize=(5.0, 3.6), dpi=120)
    ax = fig.subplots()
    plot_losses(ax, items)
    ax.set_title(title or "loss, binary view (x = (1, 0), y = (y0, 1 - y0))")
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _per_sample_loss(loss: LossLike, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    config = _taylor_config(loss)
    if config is not None:
        return taylor.reference_loss(
            config["theta"],
            y_true,
            y_pred,
            order=int(config.get("order", 3)),
            inputs=tuple(config.get("inputs", taylor.DEFAULT_INPUTS)),
            convention=config.get("convention", "paper"),
        )
    from taylorglo_tf import losses  # Keras needed only for non-TaylorGLO losses

    keras_loss = losses.get(loss)
    from keras import ops

    values = keras_loss.call(ops.convert_to_tensor(y_true, "float32"), ops.convert_to_tensor(y_pred, "float32"))
    return np.asarray(ops.convert_to_numpy(values), dtype=np.float64)


def _taylor_config(loss: LossLike) -> Mapping[str, Any] | None:
    """The bare TaylorGLO config of a dict/JSON path, or None if it is something else."""
    if isinstance(loss, (str, os.PathLike)) and Path(loss).suffix == ".json":
        try:
            loss = json.loads(Path(loss).read_text())
        except FileNotFoundError:
            raise ValueError(f"loss file {str(loss)!r} does not exist") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"loss file {str(loss)!r} is not valid JSON: {exc}") from None
    if not isinstance(loss, Mapping):
        return None
    if loss.get("class_name") == taylor.KERAS_CLASS_NAME and isinstance(loss.get("config"), Mapping):
        return loss["config"]
    if "theta" in loss:
        return loss
    return None


def _label(loss: LossLike) -> str:
    if isinstance(loss, (str, os.PathLike)):
        return Path(loss).stem if str(loss).endswith(".json") else str(loss)
    if isinstance(loss, Mapping):
        config = loss.get("config", loss)
        return str(config.get("name", loss.get("class_name", "loss")))
    return str(getattr(loss, "name", type(loss).__name__))
