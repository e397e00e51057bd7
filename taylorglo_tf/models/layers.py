"""Building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers


def regularizer(weight_decay: float):
    """PyTorch-style weight decay ``wd`` as a Keras kernel regulariser: ``l2(wd / 2)``."""
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay > 0 else None


def conv(
    filters: int,
    kernel: int,
    weight_decay: float,
    *,
    strides: int = 1,
    padding: str = "same",
    use_bias: bool = True,
    **kw,
) -> layers.Conv2D:
    """A Conv2D with the weight-decay regulariser on its kernel."""
    return layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_regularizer=regularizer(weight_decay),
        **kw,
    )


def batch_norm() -> layers.BatchNormalization:
    """BatchNormalization with PyTorch's defaults (momentum 0.9 in Keras terms, eps 1e-5)."""
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5)


def classifier(x, num_classes: int, weight_decay: float, output_activation: str | None):
    """Final dense layer, then the output activation computed in float32 (mixed precision)."""
    x = layers.Dense(num_classes, kernel_regularizer=regularizer(weight_decay), name="logits")(x)
    if output_activation:
        x = layers.Activation(output_activation, dtype="float32", name="probabilities")(x)
    return x


def check_shape(input_shape: Sequence[int], num_classes: int) -> tuple[int, int, int]:
    """Validate an image shape ``(H, W, C)`` (or ``(H, W)``) and a class count."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be (height, width, channels), got {tuple(input_shape)!r}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
    return shape


@keras.saving.register_keras_serializable(package="taylorglo_tf")
class ZeroPadChannels(layers.Layer):
    """Appends ``extra`` all-zero channels (PyramidNet's parameter-free shortcut)."""

    def __init__(self, extra: int, **kwargs):
        super().__init__(**kwargs)
        self.extra = int(extra)

    def call(self, x):
        return keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, self.extra]])

    def compute_output_shape(self, input_shape):
        c = input_shape[-1]
        return tuple(input_shape[:-1]) + (None if c is None else c + self.extra,)

    def get_config(self):
        return {**super().get_config(), "extra": self.extra}
