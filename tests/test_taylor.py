"""The multivariate Taylor parameterisation: counts, order of terms, conventions, reference evaluation."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from taylorglo_tf import taylor

MNIST_THETA = list(taylor.PAPER_MNIST_THETA)


def eq5_by_hand(theta, x, y):
    """Paper eq. 5 written out term by term: f(x, y) (without the -(1/n) sum)."""
    t0, t1, t2, t3, t4, t5, t6, t7 = theta
    dx, dy = x - t0, y - t1
    return (
        t2 * dy
        + 0.5 * t3 * dy**2
        + (1.0 / 6.0) * t4 * dy**3
        + t5 * dx * dy
        + 0.5 * t6 * dx * dy**2
        + 0.5 * t7 * dx**2 * dy
    )


def eq4_by_hand(theta, x, y):
    """Paper eq. 4 (full third-order form, 12 parameters) term by term."""
    t = theta
    dx, dy = x - t[0], y - t[1]
    return (
        t[2]
        + t[3] * dy
        + 0.5 * t[4] * dy**2
        + t[5] * dy**3 / 6
        + t[6] * dx
        + t[7] * dx * dy
        + 0.5 * t[8] * dx * dy**2
        + 0.5 * t[9] * dx**2
        + 0.5 * t[10] * dx**2 * dy
        + t[11] * dx**3 / 6
    )


@pytest.mark.parametrize(
    ("num_vars", "order", "expected"), [(2, 1, 5), (2, 2, 8), (2, 3, 12), (2, 4, 17), (2, 5, 23), (3, 3, 23)]
)
def test_full_parameter_count_is_v_plus_binomial(num_vars, order, expected):
    assert taylor.full_param_count(num_vars, order) == expected
    assert len(taylor.multi_indices(num_vars, order)) + num_vars == expected


@pytest.mark.parametrize(
    ("inputs", "order", "expected"),
    # v + C(v+k,k) - C(v-1+k,k): the y-free multi-indices are those of v-1 variables.
    [
        (("x", "y"), 1, 3),
        (("x", "y"), 2, 5),
        (("x", "y"), 3, 8),
        (("x", "y"), 4, 12),
        (("x", "y"), 5, 17),
        (("x", "y", "t"), 3, 13),
        (("y",), 3, 4),
    ],
)
def test_trimmed_parameter_count_drops_terms_without_y(inputs, order, expected):
    assert taylor.expected_theta_length(order, inputs) == expected
    assert taylor.trimmed_param_count(len(inputs), order) == expected
    expansion = taylor.Expansion(inputs, order)
    assert all(alpha[expansion.y_index] > 0 for alpha in expansion.multi_indices)


def test_multi_indices_follow_the_paper_order_of_eq4_and_eq5():
    full = taylor.multi_indices(2, 3)
    assert full == ((0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (3, 0))
    trimmed = taylor.multi_indices(2, 3, trimmed=True, y_index=1)
    assert trimmed == ((0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (2, 1))


def test_numpy_expansion_matches_eq5_written_by_hand_for_random_thetas():
    rng = np.random.default_rng(1)
    expansion = taylor.Expansion(("x", "y"), 3)
    for _ in range(20):
        theta = rng.normal(scale=3.0, size=8)
        x = rng.integers(0, 2, size=50).astype(float)
        y = rng.uniform(size=50)
        np.testing.assert_allclose(
            expansion.evaluate(theta, {"x": x, "y": y}), eq5_by_hand(theta, x, y), rtol=1e-12, atol=1e-12
        )


def test_untrimmed_expansion_matches_eq4_written_by_hand():
    rng = np.random.default_rng(2)
    expansion = taylor.Expansion(("x", "y"), 3, trimmed=False)
    theta = rng.normal(size=12)
    x, y = rng.uniform(size=30), rng.uniform(size=30)
    np.testing.assert_allclose(expansion.evaluate(theta, [x, y]), eq4_by_hand(theta, x, y), rtol=1e-12)


def test_untrim_inserts_zeros_for_dropped_terms_and_keeps_the_y_dependence():
    rng = np.random.default_rng(3)
    theta = rng.normal(size=8)
    full = taylor.untrim(theta)
    assert full.shape == (12,)
    x, y = rng.uniform(size=10), rng.uniform(size=10)
    full_value = taylor.Expansion(("x", "y"), 3, trimmed=False).evaluate(full, [x, y])
    np.testing.assert_allclose(full_value, eq5_by_hand(theta, x, y), rtol=1e-12)


def test_three_variable_expansion_sums_every_term_with_inverse_factorials():
    rng = np.random.default_rng(4)
    expansion = taylor.Expansion(("x", "y", "t"), 3)
    theta = rng.normal(size=expansion.num_params)
    z = rng.uniform(size=3)
    centres, coeffs = theta[:3], theta[3:]
    by_hand = sum(
        c / math.prod(math.factorial(a) for a in alpha) * math.prod((z[j] - centres[j]) ** alpha[j] for j in range(3))
        for c, alpha in zip(coeffs, expansion.multi_indices)
    )
    assert expansion.evaluate(theta, {"x": z[0], "y": z[1], "t": z[2]}) == pytest.approx(by_hand, rel=1e-12)


def test_paper_and_folded_conventions_convert_both_ways_and_give_the_same_function():
    rng = np.random.default_rng(5)
    theta = rng.normal(size=8)
    folded = taylor.paper_to_folded(theta)
    # eq. 5: the 1/2, 1/6, 1/2, 1/2 factors of t3, t4, t6, t7 move into the coefficients.
    np.testing.assert_allclose(folded, theta * np.array([1, 1, 1, 1 / 2, 1 / 6, 1, 1 / 2, 1 / 2]))
    np.testing.assert_allclose(taylor.folded_to_paper(folded), theta)
    expansion = taylor.Expansion()
    x, y = rng.uniform(size=7), rng.uniform(size=7)
    np.testing.assert_allclose(expansion.evaluate(folded, [x, y], "folded"), expansion.evaluate(theta, [x, y], "paper"))


def test_reference_loss_is_minus_mean_over_classes():
    rng = np.random.default_rng(6)
    y_pred = rng.dirichlet(np.ones(4), size=3)
    y_true = np.eye(4)[[0, 3, 1]]
    expected = -np.mean(eq5_by_hand(MNIST_THETA, y_true, y_pred), axis=-1)
    np.testing.assert_allclose(taylor.reference_loss(MNIST_THETA, y_true, y_pred), expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("theta", "message"),
    [
        ([1.0] * 7, "expected a vector of length 8"),
        ([1.0] * 9, "length 8"),
        ([np.nan] + [0.0] * 7, "non-finite"),
        ([0.0] * 7 + [np.inf], "non-finite"),
        ([[1.0] * 8], "length 8"),
    ],
)
def test_bad_theta_is_rejected_with_the_expected_length(theta, message):
    with pytest.raises(ValueError, match=message):
        taylor.Expansion().validate(theta)


def test_expected_length_in_error_depends_on_order_and_inputs():
    with pytest.raises(ValueError, match="length 13 for order=3, inputs=\\('x', 'y', 't'\\)"):
        taylor.Expansion(("x", "y", "t"), 3).validate([0.0] * 8)


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        (("x",), "must contain 'y'"),
        (("x", "y", "z"), "unknown input"),
        (("y", "y"), "twice"),
        ("xy", "sequence of names"),
    ],
)
def test_bad_inputs_are_rejected(inputs, message):
    with pytest.raises(ValueError, match=message):
        taylor.Expansion(inputs, 3)


@pytest.mark.parametrize("order", [0, -1, 2.5, True, 11, 10**6])
def test_order_must_be_an_integer_from_1_to_the_maximum(order):
    with pytest.raises(ValueError, match=r"order must be an integer in \[1, 10\]"):
        taylor.expected_theta_length(order)


def test_keras_config_is_written_without_tensorflow_and_names_the_registered_class():
    config = taylor.keras_config(MNIST_THETA)
    assert config["registered_name"] == "taylorglo_tf>TaylorGLOLoss"
    assert config["config"]["theta"] == MNIST_THETA
    with pytest.raises(ValueError, match="length 8"):
        taylor.keras_config(MNIST_THETA[:5])


def test_numpy_only_modules_do_not_import_tensorflow():
    script = (
        "import sys; import taylorglo_tf.taylor, taylorglo_tf.invariant, taylorglo_tf.plotting, "
        "taylorglo_tf.commands.plot;"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; assert not bad, bad"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
