"""Label and prediction handling shared by the losses of this package (``keras.ops`` only)."""

from __future__ import annotations

from typing import Any

from keras import ops

from taylorglo_tf import taylor

# The package name the losses register under ("taylorglo_tf>TaylorGLOLoss" etc.); taylor.keras_config writes it too.
PACKAGE = taylor.KERAS_PACKAGE
_HALF_FLOATS = ("float16", "bfloat16")


def full_precision_dtype(dtype: Any) -> Any:
    """Keep a loss's computation in float32 when asked for a half-precision dtype or policy.

    Keras's ``Loss`` computes in ``dtype``'s compute dtype; polynomial losses lose
    too much in 16 bits, so ``mixed_float16`` / ``float16`` / ``bfloat16`` map to float32.
    """
    if dtype is None:
        return None
    name = getattr(dtype, "name", dtype)
    compute = getattr(dtype, "compute_dtype", None)
    if compute in _HALF_FLOATS or (isinstance(name, str) and ("float16" in name)):
        return "float32"
    return dtype


def one_hot_labels(y_true: Any, y_pred: Any) -> Any:
    """One-hot ``[..., n]`` labels from one-hot/soft labels or sparse integer labels.

    Sparse vs one-hot is decided from static shapes: ``y_true`` of rank
    ``rank(y_pred) - 1``, or of equal rank with a last dimension of 1 while
    ``n > 1``, holds class indices. ``Loss.__call__`` has cast labels to the
    loss dtype, so indices are cast back to int32 before ``one_hot``.
    """
    num_classes = y_pred.shape[-1]
    if num_classes is None:
        raise ValueError(f"the number of classes (last dimension of y_pred, shape {y_pred.shape}) must be static")
    true_rank, pred_rank = len(y_true.shape), len(y_pred.shape)
    if true_rank == pred_rank - 1:
        indices = y_true
    elif true_rank == pred_rank and y_true.shape[-1] == 1 and num_classes != 1:
        indices = ops.squeeze(y_true, axis=-1)
    elif true_rank == pred_rank:
        if y_true.shape[-1] is not None and y_true.shape[-1] != num_classes:
            raise ValueError(
                f"y_true shape {tuple(y_true.shape)} does not match y_pred shape {tuple(y_pred.shape)}: "
                "pass one-hot labels with the same last dimension or sparse class indices"
            )
        return ops.cast(y_true, y_pred.dtype)
    else:
        raise ValueError(
            f"y_true of shape {tuple(y_true.shape)} fits neither one-hot nor sparse labels for "
            f"y_pred of shape {tuple(y_pred.shape)}"
        )
    return ops.one_hot(ops.cast(indices, "int32"), num_classes, dtype=y_pred.dtype)


def probabilities(y_pred: Any, from_logits: bool) -> Any:
    """Softmax over the last axis when ``y_pred`` holds logits, else ``y_pred`` unchanged."""
    return ops.softmax(y_pred, axis=-1) if from_logits else y_pred
