"""The loss-scale diagnostic: a loss's gradient w.r.t. the logits, relative to cross-entropy's, at initialisation."""

import keras
import pytest

from taylorglo_tf.losses import TaylorGLOLoss
from taylorglo_tf.training import Task, loss_scale
from tests.helpers.scaled_loss import ScaledCrossEntropy

DIGITS = Task(dataset="digits", model="tiny", seed=0)


def test_cross_entropy_has_scale_one_and_ten_times_cross_entropy_scale_ten():
    plain = loss_scale(keras.losses.CategoricalCrossentropy(), DIGITS)
    assert plain.ratio == pytest.approx(1.0, rel=1e-6)
    # Near a uniform softmax each example's gradient p - x has norm about sqrt(1 - 1/n) (0.95 for 10 classes).
    assert 0.5 < plain.cross_entropy_gradient_norm < 1.5
    assert plain.examples == 256 and plain.seed == 0
    scaled = loss_scale(ScaledCrossEntropy(10.0), DIGITS)
    assert scaled.ratio == pytest.approx(10.0, rel=1e-4)
    assert scaled.cross_entropy_gradient_norm == pytest.approx(plain.cross_entropy_gradient_norm)
    sparse = loss_scale(keras.losses.SparseCategoricalCrossentropy(), DIGITS)  # takes integer labels
    assert sparse.ratio == pytest.approx(1.0, rel=1e-6)


def test_a_taylor_loss_scales_linearly_and_the_record_states_the_definition():
    approximation = TaylorGLOLoss.from_loss(keras.losses.CategoricalCrossentropy(), scale=10)
    doubled = TaylorGLOLoss.from_loss(keras.losses.CategoricalCrossentropy(), scale=20)
    once, twice = loss_scale(approximation, DIGITS), loss_scale(doubled, DIGITS)
    assert once.ratio > 0
    assert twice.ratio == pytest.approx(2 * once.ratio, rel=1e-4)
    record = once.to_dict()
    assert record["ratio"] == pytest.approx(once.ratio)
    assert "logits" in record["definition"] and "cross-entropy" in record["definition"]


def test_loss_scale_rejects_what_is_not_a_loss_or_a_task():
    with pytest.raises(TypeError, match="keras.losses.Loss"):
        loss_scale("cross_entropy", DIGITS)
    with pytest.raises(TypeError, match="training.Task"):
        loss_scale(keras.losses.CategoricalCrossentropy(), {"dataset": "digits"})
    with pytest.raises(ValueError, match="examples must be an integer >= 1, got 0"):
        loss_scale(keras.losses.CategoricalCrossentropy(), DIGITS, examples=0)
