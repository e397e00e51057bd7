"""Plain CNNs: ``tiny`` (tests, embedded digits default), ``basic_cnn`` (GLO MNIST), ``alexnet``."""

from __future__ import annotations

import keras
from keras import layers

from taylorglo_tf.models.layers import classifier, conv, regularizer


def tiny(input_shape, num_classes, *, weight_decay=0.0, output_activation="softmax"):
    """A very small CNN: conv 3x3x16 ReLU, maxpool 2, dense 64 ReLU, dense C.

    Trains to ~95% on the 8x8 digits in a few hundred steps (tests, embedded default).
    """
    inputs = keras.Input(input_shape)
    x = conv(16, 3, weight_decay, activation="relu")(inputs)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu", kernel_regularizer=regularizer(weight_decay))(x)
    return keras.Model(inputs, classifier(x, num_classes, weight_decay, output_activation), name="tiny")


def basic_cnn(input_shape, num_classes, *, weight_decay=0.0, dropout=0.4, output_activation="softmax"):
    """GLO's MNIST CNN: conv 5x5x32 ReLU, maxpool 2, conv 5x5x64 ReLU, maxpool 2,
    dense 1024 ReLU, dropout 0.4, dense C (3.27M parameters on 28x28x1, 10 classes)."""
    inputs = keras.Input(input_shape)
    x = conv(32, 5, weight_decay, activation="relu")(inputs)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = conv(64, 5, weight_decay, activation="relu")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(1024, activation="relu", kernel_regularizer=regularizer(weight_decay))(x)
    x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, classifier(x, num_classes, weight_decay, output_activation), name="basic_cnn")


def alexnet(input_shape, num_classes, *, weight_decay=5e-4, output_activation="softmax"):
    """AlexNet's CIFAR variant (as in the common PyTorch CIFAR code): conv 11x11x64/4,
    pool, conv 5x5x192, pool, conv 3x3x384, 3x3x256, 3x3x256, pool, dense C
    (2.47M parameters on 32x32x3, 10 classes). Pools use 'same' padding so that
    small inputs still work (identical to 'valid' on even sizes)."""
    inputs = keras.Input(input_shape)
    x = conv(64, 11, weight_decay, strides=4, activation="relu")(inputs)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = conv(192, 5, weight_decay, activation="relu")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    for filters in (384, 256, 256):
        x = conv(filters, 3, weight_decay, activation="relu")(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.Flatten()(x)
    return keras.Model(inputs, classifier(x, num_classes, weight_decay, output_activation), name="alexnet")
