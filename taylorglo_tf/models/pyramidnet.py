"""PyramidNet (Han et al., 2017), additive widening, basic blocks."""

from __future__ import annotations

import keras
from keras import layers

from taylorglo_tf.models.layers import ZeroPadChannels, batch_norm, classifier, conv


def _block(x, filters: int, stride: int, weight_decay: float):
    """BN-conv3x3(stride)-BN-ReLU-conv3x3-BN; shortcut: 2x2 average pool when
    strided, then zero-padded channels (no parameters)."""
    y = batch_norm()(x)
    y = conv(filters, 3, weight_decay, strides=stride, use_bias=False, kernel_initializer="he_normal")(y)
    y = layers.ReLU()(batch_norm()(y))
    y = conv(filters, 3, weight_decay, use_bias=False, kernel_initializer="he_normal")(y)
    y = batch_norm()(y)
    shortcut = x
    if stride != 1:
        shortcut = layers.AveragePooling2D(2, padding="same")(shortcut)
    if filters > x.shape[-1]:
        shortcut = ZeroPadChannels(filters - x.shape[-1])(shortcut)
    return layers.Add()([y, shortcut])


def pyramidnet(depth: int, alpha: int):
    """Builder for PyramidNet-depth with widening ``alpha``: (depth-2)/6 basic blocks
    per stage; block i has round(16 + alpha * i / n_blocks) filters."""
    if (depth - 2) % 6:
        raise ValueError(f"pyramidnet depth must be 6n+2, got {depth}")
    per_stage = (depth - 2) // 6

    def build(input_shape, num_classes, *, weight_decay=1e-4, output_activation="softmax"):
        inputs = keras.Input(input_shape)
        x = batch_norm()(conv(16, 3, weight_decay, use_bias=False, kernel_initializer="he_normal")(inputs))
        width = 16.0
        step = alpha / (3 * per_stage)
        for stage in range(3):
            for b in range(per_stage):
                width += step
                stride = 2 if stage > 0 and b == 0 else 1
                x = _block(x, int(round(width)), stride, weight_decay)
        x = layers.ReLU()(batch_norm()(x))
        x = layers.GlobalAveragePooling2D()(x)
        return keras.Model(
            inputs, classifier(x, num_classes, weight_decay, output_activation), name=f"pyramidnet_{depth}_{alpha}"
        )

    build.__doc__ = f"PyramidNet-{depth}, alpha {alpha}. " + (pyramidnet.__doc__ or "")
    return build
