"""Model builders that specs name as ``python:tests.helpers.user_models:FUNCTION`` (a user's package)."""

from __future__ import annotations


def small_mlp(input_shape, num_classes):
    """A flat MLP for any input shape: what a user's builder looks like."""
    import keras

    return keras.Sequential(
        [
            keras.Input(tuple(input_shape)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ]
    )


def not_a_model(input_shape, num_classes):
    return "a string"
