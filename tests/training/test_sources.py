"""Model and data sources: a registered user model trains through the same evaluator as the zoo."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from taylorglo_tf import data, models, taylor
from taylorglo_tf.losses import TaylorGLOLoss
from taylorglo_tf.training import Evaluator, Task, sources


@pytest.fixture
def registry():
    """Registered names are removed after the test (the registry is per process)."""
    names: list[str] = []

    def register(name, *args, **kwargs):
        registration = sources.register(name, *args, **kwargs)
        names.append(name)
        return registration

    yield register
    for name in names:
        if name in sources.registered():
            sources.unregister(name)


def _loss():
    return TaylorGLOLoss(taylor.PAPER_MNIST_THETA)


def _sgd():
    return keras.optimizers.SGD(0.05, momentum=0.9)


def _mlp(features: int, classes: int, activation: str = "softmax"):
    def build():
        return keras.Sequential(
            [
                keras.Input((features,)),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(classes, activation=activation),
            ]
        )

    return build


def _blobs(n: int, features: int = 4, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    x = rng.normal(size=(n, features)).astype(np.float32) + y[:, None]
    return x, y


def test_a_registered_zoo_architecture_trains_exactly_as_the_zoo_entry(registry):
    """Same builder, optimizer, data and seed as models.build("tiny") on digits: the same result."""
    splits = data.load("digits")
    recipe = models.recipe("tiny")
    spe = recipe.steps_per_epoch(len(splits.y_train), recipe.batch_size)
    registry(
        "script:tiny-digits",
        lambda: models.build("tiny", splits.input_shape, splits.num_classes),
        lambda: recipe.optimizer(spe),
        train=(splits.x_train, splits.y_train),
        validation=(splits.x_val, splits.y_val),
        test=(splits.x_test, splits.y_test),
    )
    zoo = Evaluator().evaluate(_loss(), Task(dataset="digits", model="tiny", steps=15, seed=3), test=True)
    user_task = Task(dataset="script:tiny-digits", model="script:tiny-digits", steps=15, seed=3, batch_size=32)
    user = Evaluator().evaluate(_loss(), user_task, test=True)
    assert user.status == zoo.status == "ok"
    assert user.val_accuracy == pytest.approx(zoo.val_accuracy, abs=1e-6)
    assert user.val_loss == pytest.approx(zoo.val_loss, rel=1e-4)
    assert user.test_accuracy == pytest.approx(zoo.test_accuracy, abs=1e-6)


def test_an_unregistered_script_model_raises_unknown_source():
    task = Task(dataset="script:nobody", model="script:nobody", steps=2)
    with pytest.raises(sources.UnknownSource, match="script:nobody"):
        Evaluator().evaluate(_loss(), task)


def test_a_tabular_mlp_on_wine_learns(registry):
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    registry("script:wine", _mlp(13, 3), _sgd, train=(x[:140], y[:140]), validation=(x[140:], y[140:]))
    task = Task(dataset="script:wine", model="script:wine", steps=60, batch_size=16)
    results = Evaluator().evaluate_many([_loss(), _loss()], task)
    assert [r.status for r in results] == ["ok", "ok"]
    assert results[0].val_accuracy > 0.8
    assert results[0].val_accuracy == pytest.approx(results[1].val_accuracy, abs=1e-6)
