"""All-CNN-C (Springenberg et al., 2015)."""

from __future__ import annotations

import keras
from keras import layers

from taylorglo_tf.models.layers import conv


def allcnn_c(input_shape, num_classes, *, weight_decay=1e-3, output_activation="softmax"):
    """All-CNN-C: dropout 0.2 on the input; 3x3 convs 96, 96, 96/2 (dropout 0.5),
    192, 192, 192/2 (dropout 0.5), 192 (3x3 valid), 192 (1x1), C (1x1); global
    average pooling (1.37M parameters on 32x32x3, 10 classes). On inputs whose
    feature map is smaller than 3x3 at that point the 3x3 conv uses 'same' padding.
    """
    inputs = keras.Input(input_shape)
    x = layers.Dropout(0.2)(inputs)
    for filters in (96, 192):
        x = conv(filters, 3, weight_decay, activation="relu")(x)
        x = conv(filters, 3, weight_decay, activation="relu")(x)
        x = conv(filters, 3, weight_decay, strides=2, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
    padding = "valid" if min(x.shape[1], x.shape[2]) >= 3 else "same"
    x = conv(192, 3, weight_decay, padding=padding, activation="relu")(x)
    x = conv(192, 1, weight_decay, activation="relu")(x)
    x = conv(num_classes, 1, weight_decay, name="class_maps")(x)
    x = layers.GlobalAveragePooling2D(name="logits")(x)
    if output_activation:
        x = layers.Activation(output_activation, dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, x, name="allcnn_c")
