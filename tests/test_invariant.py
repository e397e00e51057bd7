"""The validity pre-screen of REFERENCE.md section 2."""

from __future__ import annotations

import numpy as np
import pytest

from taylorglo_tf import invariant, taylor

MNIST_THETA = list(taylor.PAPER_MNIST_THETA)


def dfdy(theta, x, y, h=1e-6):
    """Central finite difference of the reference expansion in y (independent of the invariant's algebra)."""
    expansion = taylor.Expansion()
    return (expansion.evaluate(theta, [x, y + h]) - expansion.evaluate(theta, [x, y - h])) / (2 * h)


def test_appendix_c_mnist_theta_passes_for_ten_classes():
    assert invariant.is_valid(MNIST_THETA, 10)


def test_margin_equals_the_derivative_condition_at_the_uniform_prediction():
    # valid iff df/dy(1, 1/n) >= (n-1) df/dy(0, 1/n), checked with finite differences.
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 100):
        for _ in range(25):
            theta = rng.normal(scale=2.0, size=8)
            g1, g0 = dfdy(theta, 1.0, 1.0 / n), dfdy(theta, 0.0, 1.0 / n)
            assert invariant.invariant_margin(theta, n) == pytest.approx(g1 - (n - 1) * g0, rel=1e-5, abs=1e-5)


def test_negated_mnist_theta_is_invalid():
    theta = np.array(MNIST_THETA)
    theta[2:] *= -1.0  # the same shape upside down: the loss would push the true class down
    assert not invariant.is_valid(theta, 10)


def test_prescreen_accepts_and_rejects_a_mix_of_random_thetas():
    rng = np.random.default_rng(1)
    verdicts = {invariant.is_valid(rng.normal(scale=1.2, size=8), 10) for _ in range(200)}
    assert verdicts == {True, False}


@pytest.mark.parametrize("theta", [[0.0] * 7, [0.0] * 12, [[0.0] * 8]])
def test_other_shapes_get_a_clear_error(theta):
    with pytest.raises(ValueError, match="order-3 losses in \\(x, y\\) only.*length 8"):
        invariant.is_valid(theta, 10)


@pytest.mark.parametrize("n", [1, 0, 2.0, True])
def test_number_of_classes_must_be_an_integer_of_at_least_two(n):
    with pytest.raises(ValueError, match="num_classes"):
        invariant.is_valid(MNIST_THETA, n)


CROSS_ENTROPY_ORDER3 = [0.5, 0.5, 1.0, -2.0, 8.0, 2.0, -4.0, 0.0]  # Appendix F approximation of f = x log y


def test_cross_entropy_approximations_fail_the_prescreen_from_nine_classes_by_their_formula():
    # A property of the formula, worked by hand: g(1, y) = 5 - 8y + 4y^2, g(0, y) = (1 - 2y)^2;
    # at n = 10: (4 + 0 - 4/10) - 8 (1 - 4/10 + 4/100) = 3.6 - 5.12.
    order2_as_order3 = [0.5, 0.5, 1.0, -2.0, 0.0, 2.0, 0.0, 0.0]
    assert invariant.invariant_margin(CROSS_ENTROPY_ORDER3, 10) == pytest.approx(-1.52)
    assert invariant.invariant_margin(order2_as_order3, 10) == pytest.approx(-4.4)
    assert [n for n in range(2, 30) if invariant.is_valid(CROSS_ENTROPY_ORDER3, n)] == list(range(2, 9))


def test_prescreen_is_stricter_than_softmax_needs():
    # The rejected order-3 cross-entropy approximation still raises the true class's logit at the
    # uniform prediction for 10 classes: d L / d z_true < 0 (finite differences of the reference loss).
    n, h = 10, 1e-6
    one_hot = np.eye(n)[:1]

    def loss_at_logits(z):
        y = np.exp(z) / np.exp(z).sum()
        return taylor.reference_loss(CROSS_ENTROPY_ORDER3, one_hot, y[None, :])[0]

    bump = np.eye(n)[0] * h
    slope = (loss_at_logits(bump) - loss_at_logits(-bump)) / (2 * h)
    assert not invariant.is_valid(CROSS_ENTROPY_ORDER3, n)
    assert slope < 0
    g1, g0 = dfdy(CROSS_ENTROPY_ORDER3, 1.0, 1 / n), dfdy(CROSS_ENTROPY_ORDER3, 0.0, 1 / n)
    # dL/dz_true = -(1/n^2) (g1 - mean g) = -(n-1)/n^3 (g1 - g0) at the uniform prediction
    assert slope == pytest.approx(-(n - 1) / n**3 * (g1 - g0), rel=1e-5)
