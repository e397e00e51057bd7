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
    x = rng.normal(size=(n, features)) + 3.0 * y[:, None]
    return ((x - x.mean(0)) / x.std(0)).astype(np.float32), y


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


def test_a_model_without_an_input_layer_gets_its_weights_before_training(registry):
    """Keras creates a lazy model's weights on its first call; every copy must have them before the first step."""

    def build():
        return keras.Sequential([keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3, activation="softmax")])

    x, y = _blobs(120)
    registry("script:lazy", build, _sgd, train=(x, y), validation=(x, y))
    results = Evaluator().evaluate_many([_loss(), _loss()], Task(dataset="script:lazy", model="script:lazy", steps=20))
    assert [r.status for r in results] == ["ok", "ok"] and results[0].val_accuracy > 0.6


class Scale(keras.layers.Layer):
    """A user's custom layer: a learned per-feature scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


def test_a_functional_model_with_a_custom_layer_trains(registry):
    def build():
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, activation="relu")(Scale()(inputs))
        return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))

    x, y = _blobs(240)
    registry("script:custom", build, _sgd, train=(x[:200], y[:200]), validation=(x[200:], y[200:]))
    [result] = Evaluator().evaluate_many([_loss()], Task(dataset="script:custom", model="script:custom", steps=40))
    assert result.status == "ok" and result.val_accuracy > 0.6


def test_an_embedding_sequence_model_on_integer_tokens_trains(registry):
    """Integer token ids stay integers (no image-only assumptions, no augmentation)."""
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    tokens = rng.integers(2, 50, size=(300, 12))
    tokens[:, 0] = y  # the class is token 0 or 1 at the start
    build = lambda: keras.Sequential(  # noqa: E731
        [
            keras.Input((12,), dtype="int32"),
            keras.layers.Embedding(50, 8),
            keras.layers.Flatten(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    registration = registry(
        "script:tokens", build, _sgd, train=(tokens[:240], y[:240]), validation=(tokens[240:], y[240:])
    )
    assert registration.splits["train"][0].dtype == np.int32
    result = Evaluator().evaluate(_loss(), Task(dataset="script:tokens", model="script:tokens", steps=60))
    assert result.status == "ok" and result.val_accuracy > 0.9


def test_one_hot_labels_and_tf_data_batches_are_read_as_sparse_arrays(registry):
    import tensorflow as tf

    x, y = _blobs(120)
    one_hot = np.eye(3, dtype=np.float32)[y]
    batches = tf.data.Dataset.from_tensor_slices((x[:100], one_hot[:100])).batch(7)
    registration = registry("script:one-hot", _mlp(4, 3), _sgd, train=batches, validation=(x[100:], one_hot[100:]))
    train_x, train_y = registration.splits["train"]
    np.testing.assert_array_equal(train_y, y[:100])
    np.testing.assert_array_equal(train_x, x[:100])
    result = Evaluator().evaluate(_loss(), Task(dataset="script:one-hot", model="script:one-hot", steps=10))
    assert result.status == "ok"


@pytest.mark.parametrize("from_logits", [False, True])
def test_one_sigmoid_unit_is_two_classes(registry, from_logits):
    x, y = _blobs(160, classes=2)
    registration = registry(
        "script:binary",
        _mlp(4, 1, activation=None if from_logits else "sigmoid"),
        _sgd,
        train=(x[:120], y[:120]),
        validation=(x[120:], y[120:]),
        from_logits=from_logits,
    )
    assert registration.num_classes == 2
    probabilities = np.asarray(registration.build_model()(x[:3]))
    assert probabilities.shape == (3, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    result = Evaluator().evaluate(_loss(), Task(dataset="script:binary", model="script:binary", steps=40))
    assert result.status == "ok" and result.val_accuracy > 0.7


def test_logits_are_turned_into_probabilities_inside_the_model(registry):
    x, y = _blobs(100)
    registration = registry(
        "script:logits", _mlp(4, 3, activation=None), _sgd, train=(x, y), validation=(x, y), from_logits=True
    )
    np.testing.assert_allclose(np.asarray(registration.build_model()(x[:4])).sum(axis=1), 1.0, atol=1e-6)


def test_lr_scale_multiplies_the_users_learning_rate(registry):
    """lr_scale 0.5 on SGD(0.1) trains exactly as SGD(0.05) (the tuned baseline relies on it)."""
    x, y = _blobs(200)
    for name, rate in (("script:rate-10", 0.1), ("script:rate-05", 0.05)):
        registry(name, _mlp(4, 3), lambda rate=rate: keras.optimizers.SGD(rate), train=(x, y), validation=(x, y))
    halved = Evaluator().evaluate(
        _loss(), Task(dataset="script:rate-10", model="script:rate-10", steps=20, lr_scale=0.5)
    )
    plain = Evaluator().evaluate(_loss(), Task(dataset="script:rate-05", model="script:rate-05", steps=20))
    assert halved.val_loss == pytest.approx(plain.val_loss, rel=1e-5)


def test_a_model_instance_is_cloned_for_each_copy(registry):
    x, y = _blobs(120)
    registration = registry("script:instance", _mlp(4, 3)(), _sgd, train=(x, y), validation=(x, y))
    assert registration.max_copies is None
    assert registration.build_model() is not registration.build_model()
    results = Evaluator().evaluate_many(
        [_loss(), _loss()], Task(dataset="script:instance", model="script:instance", steps=5)
    )
    assert [r.status for r in results] == ["ok", "ok"]


class Unclonable(keras.Model):
    """A subclassed model without get_config: keras.models.clone_model cannot copy it."""

    def __init__(self, extra):
        super().__init__()
        self.extra = extra
        self.dense = keras.layers.Dense(3, activation="softmax")

    def call(self, x):
        return self.dense(x)


def test_a_model_that_cannot_be_cloned_trains_one_candidate_at_a_time(registry, caplog):
    x, y = _blobs(120)
    with caplog.at_level("WARNING"):
        registration = registry("script:unclonable", Unclonable(extra=1), _sgd, train=(x, y), validation=(x, y))
    assert registration.max_copies == 1
    assert "K = 1" in caplog.text and "clone_model" in caplog.text
    task = Task(dataset="script:unclonable", model="script:unclonable", steps=10)
    evaluator = Evaluator()
    together = evaluator.evaluate_many([_loss(), _loss()], task)
    assert [r.status for r in together] == ["ok", "ok"]
    # every candidate starts from the instance's weights: equal losses give equal results
    assert together[0].val_loss == pytest.approx(together[1].val_loss, rel=1e-6)


# ---------------------------------------------------------------- bad input, before any training


def _register_bad(**changes):
    x, y = _blobs(50)
    arguments = {
        "name": "script:bad",
        "build_model": _mlp(4, 3),
        "optimizer": _sgd,
        "train": (x, y),
        "validation": (x, y),
        **changes,
    }
    name = arguments.pop("name")
    try:
        sources.register(name, arguments.pop("build_model"), arguments.pop("optimizer"), **arguments)
    finally:
        if name in sources.registered():
            sources.unregister(name)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"build_model": lambda: "not a model"}, "returned str .*not a keras.Model"),
        ({"build_model": 42}, "build_model must be a function"),
        ({"build_model": _mlp(4, 3, activation="relu")}, "not class probabilities.*from_logits=True"),
        (
            {"build_model": lambda: keras.Sequential([keras.Input((4,)), keras.layers.Reshape((2, 2))])},
            "output has shape",
        ),
        (
            {"train": (np.zeros((50, 4), np.float32), np.full(50, 3))},
            "label 3 is out of range for a model with 3 classes",
        ),
        ({"train": (np.zeros((50, 4), np.float32), np.zeros((50, 2, 2)))}, r"labels of shape \(50, 2, 2\)"),
        ({"train": (np.zeros((50, 4), np.float32), np.zeros(49))}, "x has 50 rows but y has 49"),
        ({"validation": (np.zeros((0, 4), np.float32), np.zeros(0))}, "the val split is empty"),
        (
            {"train": (np.zeros((50, 5), np.float32), np.zeros(50)), "validation": (np.zeros((5, 5)), np.zeros(5))},
            "cannot be called on the training inputs",
        ),
        ({"optimizer": keras.optimizers.SGD(0.1)}, "zero-argument function returning a fresh keras optimizer"),
        ({"name": "my-search"}, "must start with 'script:'"),
    ],
)
def test_bad_input_is_refused_at_registration_naming_the_value(changes, message):
    with pytest.raises(ValueError, match=message):
        _register_bad(**changes)


def test_an_optimizer_factory_that_returns_the_same_instance_twice_is_refused():
    shared = keras.optimizers.SGD(0.1)
    with pytest.raises(ValueError, match="same instance twice"):
        _register_bad(optimizer=lambda: shared)


def test_a_registered_task_needs_its_steps():
    with pytest.raises(ValueError, match="Task.steps must be > 0 for 'script:x'"):
        Task(dataset="script:x", model="script:x", steps=0)


def test_a_registered_model_and_another_dataset_are_refused():
    with pytest.raises(ValueError, match="dataset must be the same name"):
        Task(dataset="digits", model="script:x", steps=3)


def test_asking_for_a_test_split_that_was_not_registered_names_it(registry):
    x, y = _blobs(60)
    registry("script:no-test", _mlp(4, 3), _sgd, train=(x, y), validation=(x, y))
    task = Task(dataset="script:no-test", model="script:no-test", steps=2)
    with pytest.raises(ValueError, match="'script:no-test' has no test split; register it with test="):
        Evaluator().evaluate(_loss(), task, test=True)
