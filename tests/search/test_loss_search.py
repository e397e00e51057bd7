"""``taylorglo_tf.LossSearch`` on a user's own model and data, on one machine.

Each search is tiny (population 4, 2 generations, 20 steps) so that the whole module
runs in well under a minute on 2 cores; what is checked is the product's promise:
the result folder of ``taylorglo run``, a ``TaylorGLOLoss``, the tuned comparison, and
that running the script again resumes rather than starts over.
"""

from __future__ import annotations

import csv
import io
import json

import keras
import numpy as np
import pytest

import taylorglo_tf
from taylorglo_tf.losses import TaylorGLOLoss
from tests.helpers.loss_search import sgd, wine_search, wine_splits

POPULATION, GENERATIONS = 4, 2


def _candidates(directory):
    with open(directory / "candidates.csv") as table:
        return list(csv.DictReader(table))


def _thetas(directory):
    return [
        (row["generation"], row["index"], tuple(v for k, v in row.items() if k.startswith("theta_")), row["fitness"])
        for row in _candidates(directory)
    ]


def _check_search_and_comparison(search, test_x, test_y):
    directory = search.directory
    experiment = json.loads((directory / "experiment.json").read_text())
    assert experiment["state"] == "EXPERIMENT_STATE_SUCCEEDED"
    rows = _candidates(directory)
    assert len(rows) == POPULATION * GENERATIONS
    assert all(row["status"] == "succeeded" for row in rows)
    assert isinstance(search.best_loss(), TaylorGLOLoss)
    comparison = search.compare(test_x, test_y, runs=2)
    record = comparison.to_dict()
    assert record["summary"]["loss"]["n"] == record["summary"]["baseline"]["n"] == 2
    assert record["tuned"]["summary"]["baseline"]["n"] == 2  # cross-entropy again, at its chosen rate
    assert all(0.0 <= run["test_accuracy"] <= 1.0 for run in record["runs"])
    assert (directory / "comparison.txt").read_text().startswith("best_loss.json vs cross_entropy")
    assert (directory / "comparison.json").exists()


def test_a_tabular_mlp_on_wine_finishes_a_search_and_a_tuned_comparison(tmp_path):
    (x, y), validation, (test_x, test_y) = wine_splits()
    out = io.StringIO()
    search = wine_search(tmp_path / "wine", out=out)
    assert search.search(x, y, validation_data=validation) is search
    assert "submitted experiment" in out.getvalue() and "generation 1:" in out.getvalue()
    _check_search_and_comparison(search, test_x, test_y)
    assert "against the tuned baseline" in out.getvalue()


class Scale(keras.layers.Layer):
    """A user's own layer: a learned per-feature scale."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        return inputs * self.scale


def breast_cancer_splits():
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32")
    order = np.random.default_rng(1).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:300], y[:300]), (x[300:420], y[300:420]), (x[420:], y[420:])


def test_a_functional_model_with_a_custom_layer_and_logits_with_one_hot_labels(tmp_path):
    (x, y), (vx, vy), (test_x, test_y) = breast_cancer_splits()

    def build_model():
        inputs = keras.Input((30,))
        hidden = keras.layers.Dense(8, activation="relu")(Scale()(inputs))
        return keras.Model(inputs, keras.layers.Dense(2)(hidden))  # logits

    search = taylorglo_tf.LossSearch(
        build_model,
        optimizer=sgd,
        steps=20,
        batch_size=32,
        population=POPULATION,
        generations=GENERATIONS,
        directory=tmp_path / "cancer",
        from_logits=True,
        candidates_per_step=2,
        out=io.StringIO(),
    )
    search.search(x, np.eye(2)[y], validation_data=(vx, np.eye(2)[vy]))
    _check_search_and_comparison(search, test_x, test_y)


def test_an_embedding_sequence_model_with_one_sigmoid_unit_on_generated_tokens(tmp_path):
    """Integer token sequences; the label says whether token 7 occurs (one sigmoid unit = two classes)."""
    rng = np.random.default_rng(2)
    tokens = rng.integers(1, 50, size=(400, 12)).astype("int32")
    labels = (tokens == 7).any(axis=1).astype("int32")

    def build_model():
        return keras.Sequential(
            [
                keras.Input((12,), dtype="int32"),
                keras.layers.Embedding(50, 8),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(1, activation="sigmoid"),
            ]
        )

    search = taylorglo_tf.LossSearch(
        build_model,
        optimizer=lambda: keras.optimizers.Adam(0.01),
        steps=20,
        batch_size=32,
        population=POPULATION,
        generations=GENERATIONS,
        directory=tmp_path / "tokens",
        out=io.StringIO(),
    )
    search.search(tokens[:250], labels[:250], validation_data=(tokens[250:330], labels[250:330]))
    _check_search_and_comparison(search, tokens[330:], labels[330:])


def test_running_the_script_again_resumes_and_overwrite_starts_again(tmp_path):
    (x, y), validation, _ = wine_splits()
    first = wine_search(tmp_path / "wine", out=io.StringIO())
    first.search(x, y, validation_data=validation)
    before = _thetas(tmp_path / "wine")

    out = io.StringIO()
    again = wine_search(tmp_path / "wine", out=out)
    again.search(x, y, validation_data=validation)
    assert again.experiment_id == first.experiment_id and "resumed experiment" in out.getvalue()
    assert _thetas(tmp_path / "wine") == before  # nothing trained twice

    (tmp_path / "wine" / "comparison.txt").write_text("a comparison of the old search")
    fresh = wine_search(tmp_path / "wine", overwrite=True, out=io.StringIO())
    fresh.search(x, y, validation_data=validation)
    assert fresh.experiment_id != first.experiment_id
    assert not (tmp_path / "wine" / "comparison.txt").exists()  # nothing of the old search is left
    assert [row[:3] for row in _thetas(tmp_path / "wine")] == [row[:3] for row in before]  # same seeds, same search


def test_bad_arguments_are_refused_before_any_training_naming_the_value(tmp_path):
    (x, y), _, _ = wine_splits()
    with pytest.raises(ValueError, match="population"):
        taylorglo_tf.LossSearch(
            lambda: None, optimizer=sgd, steps=1, batch_size=1, population=0, generations=1, directory=tmp_path
        )
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got -5"):
        wine_search(tmp_path / "w", steps=-5)
    with pytest.raises(ValueError, match="validation_data is required"):
        wine_search(tmp_path / "w").search(x, y, validation_data=None)
    with pytest.raises(ValueError, match="runs must be >= 2"):
        wine_search(tmp_path / "w").compare(x, y, runs=1)
    with pytest.raises(FileNotFoundError, match="run search"):
        wine_search(tmp_path / "w").best_loss()
    assert not (tmp_path / "w" / "search.db").exists()


def test_tf_data_datasets_of_batches_are_accepted_for_training_and_validation(tmp_path):
    import tensorflow as tf

    (x, y), (vx, vy), _ = wine_splits()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    validation = tf.data.Dataset.from_tensor_slices((vx, vy)).batch(9)
    search = wine_search(tmp_path / "wine", generations=1, out=io.StringIO())
    search.search(train, validation_data=validation)
    rows = _candidates(tmp_path / "wine")
    assert len(rows) == POPULATION and all(row["status"] == "succeeded" for row in rows)
    # the same search on the same rows as arrays scores the same candidates the same
    arrays = wine_search(tmp_path / "arrays", generations=1, out=io.StringIO())
    arrays.search(x, y, validation_data=(vx, vy))
    assert _thetas(tmp_path / "wine") == _thetas(tmp_path / "arrays")


def test_a_search_with_successive_halving_stops_the_bottom_and_trains_the_rest_in_full(tmp_path):
    (x, y), validation, _ = wine_splits()
    search = wine_search(
        tmp_path / "wine", generations=1, early_stopping="successive_halving", candidates_per_step=4, out=io.StringIO()
    )
    assert search.spec.search.early_stopping == "successive_halving"
    search.search(x, y, validation_data=validation)
    rows = _candidates(tmp_path / "wine")
    stopped = [row for row in rows if row["status"] == "stopped"]
    # four candidates trained together (a whole generation): two stop at the first checkpoint, one at the second
    assert sorted(row["stopped_at"] for row in stopped) == ["1", "1", "2"]
    assert all(int(row["steps"]) < 20 for row in stopped)  # the steps they trained, not the task's
    assert [int(row["steps"]) for row in rows if row["status"] == "succeeded"] == [20]


def test_an_unknown_early_stopping_rule_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match="early_stopping.*'asha'"):
        wine_search(tmp_path / "w", early_stopping="asha")
