"""Pre-activation residual networks: PreAct ResNet-20 and Wide ResNets."""

from __future__ import annotations

import keras
from keras import layers

from taylorglo_tf.models.layers import batch_norm, classifier, conv


def _preact_block(x, filters: int, stride: int, weight_decay: float, dropout: float):
    """BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3, plus a shortcut.

    The shortcut is the identity, or a 1x1 strided conv of the pre-activated
    input when the shape changes.
    """
    pre = layers.ReLU()(batch_norm()(x))
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, weight_decay, strides=stride, use_bias=False, kernel_initializer="he_normal")(pre)
    y = conv(filters, 3, weight_decay, strides=stride, use_bias=False, kernel_initializer="he_normal")(pre)
    y = layers.ReLU()(batch_norm()(y))
    if dropout > 0:
        y = layers.Dropout(dropout)(y)
    y = conv(filters, 3, weight_decay, use_bias=False, kernel_initializer="he_normal")(y)
    return layers.Add()([y, shortcut])


def _preact_net(name, input_shape, num_classes, widths, blocks_per_stage, weight_decay, dropout, output_activation):
    inputs = keras.Input(input_shape)
    x = conv(16, 3, weight_decay, use_bias=False, kernel_initializer="he_normal")(inputs)
    for stage, filters in enumerate(widths):
        for b in range(blocks_per_stage):
            stride = 2 if stage > 0 and b == 0 else 1
            x = _preact_block(x, filters, stride, weight_decay, dropout)
    x = layers.ReLU()(batch_norm()(x))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, classifier(x, num_classes, weight_decay, output_activation), name=name)


def preact_resnet20(input_shape, num_classes, *, weight_decay=1e-4, output_activation="softmax"):
    """Pre-activation ResNet-20 (He et al., 2016): 3 stages of 3 basic blocks,
    16/32/64 filters (0.27M parameters on 32x32x3, 10 classes)."""
    return _preact_net(
        "preact_resnet20", input_shape, num_classes, (16, 32, 64), 3, weight_decay, 0.0, output_activation
    )


def wide_resnet(depth: int, width: int):
    """Builder for WRN-depth-width (Zagoruyko & Komodakis, 2016): (depth-4)/6 blocks
    per stage, 16k/32k/64k filters, optional dropout between the block's convs."""
    if (depth - 4) % 6:
        raise ValueError(f"wide_resnet depth must be 6n+4, got {depth}")

    def build(input_shape, num_classes, *, weight_decay=5e-4, dropout=0.0, output_activation="softmax"):
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        return _preact_net(
            f"wide_resnet_{depth}_{width}",
            input_shape,
            num_classes,
            (16 * width, 32 * width, 64 * width),
            (depth - 4) // 6,
            weight_decay,
            dropout,
            output_activation,
        )

    build.__doc__ = f"Wide ResNet {depth}-{width}. " + (wide_resnet.__doc__ or "")
    return build
