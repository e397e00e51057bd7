"""The trainer's adapter with models that are not in the zoo: ``python:`` builders and ``script:`` names."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.trainer.keras_evaluator import KerasEvaluator
from taylorglo_tf.training import Task, sources
from tests.helpers.leases import APPENDIX_C_THETA, RecordingHeartbeat, lease

PYTHON_MODEL = "python:tests.helpers.user_models:small_mlp"


def _python_lease(model=PYTHON_MODEL, **recipe):
    fields = {"learning_rate": 0.05, "momentum": 0.9, "steps": 400, "batch_size": 32, **recipe}
    out = lease(steps=30)
    out.task.model = model
    out.task.recipe.CopyFrom(types_pb2.RecipeSpec(**fields))
    return out


def test_a_python_model_in_a_spec_trains_through_the_keras_evaluator():
    [result] = KerasEvaluator().evaluate_many([_python_lease()], [RecordingHeartbeat()])
    assert result.status == "ok", result
    assert result.fitness > 0.5  # 30 SGD steps of an MLP on digits


def test_the_recipe_block_reaches_the_task_and_back():
    task = Task.from_proto(_python_lease(milestones=[100, 200], gamma=0.5).task)
    assert task.model == PYTHON_MODEL
    assert task.recipe["learning_rate"] == 0.05 and task.recipe["milestones"] == (100, 200)
    assert Task.from_proto(task.to_proto()) == task


def test_a_python_reference_that_does_not_import_is_each_leases_error_naming_it_logged_once(caplog):
    evaluator = KerasEvaluator()
    for _ in range(2):
        leases = [_python_lease("python:no_such_package.models:build") for _ in range(2)]
        results = evaluator.evaluate_many(leases, [RecordingHeartbeat(), RecordingHeartbeat()])
        for result in results:
            assert isinstance(result, sources.SourceError)
            assert "no_such_package.models" in str(result) and "does not import" in str(result)
    assert caplog.text.count("does not import") == 1


def test_a_python_builder_that_returns_no_model_is_refused_naming_what_it_returned():
    [result] = KerasEvaluator().evaluate_many(
        [_python_lease("python:tests.helpers.user_models:not_a_model")], [RecordingHeartbeat()]
    )
    assert isinstance(result, ValueError) and "not a keras.Model" in str(result) and "str" in str(result)


def test_a_script_model_this_process_did_not_register_is_unknown_source_per_lease():
    """The worker gives such a lease back unspent: the adapter must say which lease, distinctly."""
    script = lease(steps=5)
    script.task.model = script.task.dataset = "script:someone-elses"
    zoo = lease(steps=5, index=1)
    results = KerasEvaluator().evaluate_many([script, zoo], [RecordingHeartbeat(), RecordingHeartbeat()])
    assert isinstance(results[0], sources.UnknownSource) and results[0].name == "script:someone-elses"
    assert results[1].status == "ok"


def test_a_registered_script_model_trains_from_a_lease():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = (rng.normal(size=(200, 5)) + y[:, None]).astype(np.float32)
    build = lambda: keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, activation="softmax")])  # noqa: E731
    sources.register(
        "script:lease-test",
        build,
        lambda: keras.optimizers.SGD(0.1),
        train=(x[:150], y[:150]),
        validation=(x[150:], y[150:]),
    )
    try:
        script = lease(steps=20, batch_size=16)
        script.task.model = script.task.dataset = "script:lease-test"
        [result] = KerasEvaluator().evaluate_many([script], [RecordingHeartbeat()])
        assert result.status == "ok" and result.fitness > 0.7
    finally:
        sources.unregister("script:lease-test")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model": PYTHON_MODEL}, "spec.task.recipe"),  # a custom model needs its recipe
        ({"recipe": {"learning_rate": 0.1, "steps": 10}}, "spec.task.recipe"),  # the zoo has its own
        ({"model": "python:not a reference"}, "spec.task.model"),
        ({"model": "script:mine"}, "spec.task.dataset"),  # a script's dataset is its own name
    ],
)
def test_spec_validation_names_the_bad_model_field(changes, field):
    from taylorglo_tf import spec

    data = {"task": {"dataset": "digits", "model": "tiny", "steps": 10, **changes}}
    with pytest.raises(spec.SpecError) as raised:
        spec.validate(spec.apply_defaults(spec.from_dict(data)))
    assert raised.value.field == field


def test_the_recipe_blocks_weight_decay_and_milestones_change_the_training():
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator

    def result(**recipe):
        fields = {"learning_rate": 0.05, "steps": 100, "batch_size": 32, **recipe}
        task = Task(dataset="digits", model=PYTHON_MODEL, steps=12, seed=1, recipe=fields)
        return Evaluator().evaluate(TaylorGLOLoss(APPENDIX_C_THETA), task).val_loss

    plain = result()
    assert result(weight_decay=0.3) != pytest.approx(plain, rel=1e-6)
    assert result(milestones=[5], gamma=0.1) != pytest.approx(plain, rel=1e-6)
    assert result(milestones=[50]) == pytest.approx(plain, rel=1e-6)  # after the 12 steps: no change


def test_a_python_tasks_recipe_survives_the_dict_form():
    task = Task(
        dataset="digits", model=PYTHON_MODEL, steps=5, recipe={"learning_rate": 0.1, "steps": 50, "milestones": [10]}
    )
    assert task.recipe["momentum"] == 0.0 and task.recipe["milestones"] == (10,)  # defaults filled in
    assert Task.from_dict(task.to_dict()) == task


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"steps": 50}, "learning_rate must be a number"),
        ({"learning_rate": 0.1}, "steps must be an integer >= 1"),
        ({"learning_rate": 0.1, "steps": 50, "optimizer": "adam"}, "optimizer must be one of"),
        ({"learning_rate": 0.1, "steps": 50, "milestones": [20, 10]}, "milestones must be increasing"),
        ({"learning_rate": 0.1, "steps": 50, "momentun": 0.9}, r"unknown field\(s\) \['momentun'\]"),
    ],
)
def test_a_bad_recipe_block_is_refused_naming_the_field(recipe, message):
    with pytest.raises(ValueError, match=message):
        Task(dataset="digits", model=PYTHON_MODEL, steps=5, recipe=recipe)
