"""A loss that is exactly cross-entropy times a constant: a loss whose only change is its scale."""

import keras


class ScaledCrossEntropy(keras.losses.CategoricalCrossentropy):
    """``factor * CategoricalCrossentropy``; for SGD, the same as ``factor`` times the learning rate."""

    def __init__(self, factor: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, y_true, y_pred):
        return self.factor * super().call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
