"""TaylorGLOLoss and the baselines against independent NumPy references, in every Keras setting."""

from __future__ import annotations

import json
import math

import keras
import numpy as np
import pytest
from keras import ops

from taylorglo_tf import losses, taylor
from taylorglo_tf.losses import BaikalLoss, Poly1Loss, TaylorGLOLoss

MNIST_THETA = list(taylor.PAPER_MNIST_THETA)
RNG = np.random.default_rng(0)


def batch(num_samples=16, num_classes=5, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=num_samples)
    y_pred = rng.dirichlet(np.ones(num_classes), size=num_samples).astype(np.float32)
    return labels, np.eye(num_classes, dtype=np.float32)[labels], y_pred


def as_numpy(value):
    return np.asarray(ops.convert_to_numpy(value), dtype=np.float64)


# -- values -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("order", "inputs"),
    [
        (1, ("x", "y")),
        (2, ("x", "y")),
        (3, ("x", "y")),
        (4, ("x", "y")),
        (5, ("x", "y")),
        (3, ("y", "x")),
        (3, ("x", "y", "t")),
    ],
)
def test_keras_loss_matches_numpy_reference_in_float32(order, inputs):
    rng = np.random.default_rng(order)
    length = taylor.expected_theta_length(order, inputs)
    _, one_hot, y_pred = batch()
    for _ in range(5):
        theta = rng.normal(scale=1.5, size=length)
        loss = TaylorGLOLoss(theta, order=order, inputs=inputs, reduction=None)
        loss.set_progress(0.3)
        expected = taylor.reference_loss(
            theta.astype(np.float32), one_hot, y_pred, order=order, inputs=inputs, progress=0.3
        )
        scale = np.max(np.abs(expected))
        np.testing.assert_allclose(as_numpy(loss(one_hot, y_pred)), expected, rtol=1e-5, atol=1e-6 * scale)


def test_default_loss_is_eq5_averaged_over_classes_and_batch():
    _, one_hot, y_pred = batch()
    expected = taylor.reference_loss(MNIST_THETA, one_hot, y_pred).mean()
    assert float(TaylorGLOLoss(MNIST_THETA)(one_hot, y_pred)) == pytest.approx(expected, rel=1e-5)


def test_folded_convention_gives_the_same_loss_as_paper_convention():
    _, one_hot, y_pred = batch()
    paper = TaylorGLOLoss(MNIST_THETA)
    folded = TaylorGLOLoss(taylor.paper_to_folded(MNIST_THETA), convention="folded")
    assert float(folded(one_hot, y_pred)) == pytest.approx(float(paper(one_hot, y_pred)), rel=1e-6)


def test_sparse_labels_give_the_same_loss_as_one_hot():
    labels, one_hot, y_pred = batch()
    loss = TaylorGLOLoss(MNIST_THETA, reduction=None)
    expected = as_numpy(loss(one_hot, y_pred))
    np.testing.assert_allclose(as_numpy(loss(labels, y_pred)), expected, rtol=1e-6)
    np.testing.assert_allclose(as_numpy(loss(labels[:, None], y_pred)), expected, rtol=1e-6)
    np.testing.assert_allclose(as_numpy(loss(labels.astype(np.float32), y_pred)), expected, rtol=1e-6)


def test_mismatched_label_shape_is_an_error():
    _, _, y_pred = batch(num_classes=5)
    with pytest.raises(ValueError, match="does not match y_pred shape"):
        TaylorGLOLoss(MNIST_THETA)(np.zeros((16, 4), np.float32), y_pred)


def test_from_logits_applies_softmax():
    _, one_hot, _ = batch()
    logits = RNG.normal(size=one_hot.shape).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    with_logits = TaylorGLOLoss(MNIST_THETA, from_logits=True)(one_hot, logits)
    assert float(with_logits) == pytest.approx(float(TaylorGLOLoss(MNIST_THETA)(one_hot, probs)), rel=1e-5)


def test_gradient_wrt_predictions_matches_finite_differences():
    import tensorflow as tf

    _labels, one_hot, y_pred = batch(num_samples=4, num_classes=3)
    theta = np.random.default_rng(7).normal(size=8)
    loss = TaylorGLOLoss(theta, reduction="sum")
    y_var = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = loss(one_hot, y_var)
    grad = tape.gradient(value, y_var).numpy()
    h = 1e-6
    fd = np.zeros_like(y_pred, dtype=np.float64)
    base = y_pred.astype(np.float64)
    for idx in np.ndindex(base.shape):
        up, down = base.copy(), base.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (
            taylor.reference_loss(theta, one_hot, up).sum() - taylor.reference_loss(theta, one_hot, down).sum()
        ) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-4 * np.abs(fd).max())


# -- reductions and sample weights -----------------------------------------------------------
@pytest.mark.parametrize("reduction", [None, "none", "sum", "sum_over_batch_size", "mean", "mean_with_sample_weight"])
def test_every_reduction_with_sample_weights_matches_numpy(reduction):
    labels, one_hot, y_pred = batch()
    weights = RNG.uniform(0.0, 2.0, size=len(labels)).astype(np.float32)
    per_sample = taylor.reference_loss(MNIST_THETA, one_hot, y_pred) * weights
    expected = {
        None: per_sample,
        "none": per_sample,
        "sum": per_sample.sum(),
        "sum_over_batch_size": per_sample.mean(),
        "mean": per_sample.mean(),
        "mean_with_sample_weight": per_sample.sum() / weights.sum(),
    }[reduction]
    value = TaylorGLOLoss(MNIST_THETA, reduction=reduction)(labels, y_pred, sample_weight=weights)
    np.testing.assert_allclose(as_numpy(value), expected, rtol=1e-5)


def test_zero_sample_weight_removes_a_sample():
    labels, _, y_pred = batch()
    weights = np.ones(len(labels), np.float32)
    weights[0] = 0.0
    loss = TaylorGLOLoss(MNIST_THETA, reduction="sum")
    assert float(loss(labels, y_pred, sample_weight=weights)) == pytest.approx(
        float(loss(labels[1:], y_pred[1:])), rel=1e-5
    )


# -- bad theta --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "theta", "message"),
    [
        ({}, [0.0] * 7, "length 8 for order=3"),
        ({"order": 4}, [0.0] * 8, "length 12 for order=4"),
        ({"inputs": ("x", "y", "t")}, [0.0] * 8, "length 13"),
        ({}, [0.0] * 7 + [float("nan")], "non-finite"),
        ({}, [float("inf")] + [0.0] * 7, "non-finite"),
        ({}, [1e39] + [0.0] * 7, "overflows float32"),
        ({}, "abc", "vector of 8 numbers"),
    ],
)
def test_bad_theta_raises_value_error_naming_the_expected_length(kwargs, theta, message):
    with pytest.raises(ValueError, match=message):
        TaylorGLOLoss(theta, **kwargs)


def test_set_theta_rejects_bad_values_and_keeps_the_old_ones():
    loss = TaylorGLOLoss(MNIST_THETA)
    with pytest.raises(ValueError, match="length 8"):
        loss.set_theta([1.0, 2.0])
    with pytest.raises(ValueError, match="non-finite"):
        loss.set_theta([np.nan] * 8)
    np.testing.assert_array_equal(loss.theta, MNIST_THETA)
    np.testing.assert_allclose(as_numpy(loss.theta_variable), np.float32(MNIST_THETA))


def test_theta_property_is_a_float64_copy():
    loss = TaylorGLOLoss(MNIST_THETA)
    theta = loss.theta
    assert theta.dtype == np.float64
    theta[0] = 99.0
    assert loss.theta[0] == MNIST_THETA[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"convention": "other"}, "convention"), ({"inputs": ("x", "q")}, "unknown input"), ({"order": 0}, "order")],
)
def test_bad_options_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaylorGLOLoss([0.0] * 8, **kwargs)


def test_progress_must_lie_in_the_unit_interval():
    loss = TaylorGLOLoss([0.0] * 13, inputs=("x", "y", "t"))
    with pytest.raises(ValueError, match="t=1.5"):
        loss.set_progress(1.5)


# -- Keras integration ------------------------------------------------------------------------
def tiny_model(num_classes=5, seed=0, dtype=None):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", dtype=dtype),
            keras.layers.Dense(num_classes, activation="softmax", dtype=dtype),
        ]
    )


def data(num_samples=32, num_classes=5):
    rng = np.random.default_rng(3)
    return rng.normal(size=(num_samples, 6)).astype(np.float32), rng.integers(0, num_classes, size=num_samples)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_compiled_train_step_sees_set_theta_without_retracing(jit_compile):
    x, y = data()
    loss = TaylorGLOLoss(MNIST_THETA)
    traces = []
    original_call = loss.call
    loss.call = lambda *args: (traces.append(1), original_call(*args))[1]  # runs only while tracing
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss, jit_compile=jit_compile)
    probs = model.predict(x, verbose=0)
    values = []
    for theta in (MNIST_THETA, np.random.default_rng(1).normal(size=8), np.random.default_rng(2).normal(size=8)):
        loss.set_theta(theta)
        values.append(float(model.train_on_batch(x, y)))
        # learning rate 0: the model is unchanged, so the step's loss is the reference loss for the new theta.
        assert values[-1] == pytest.approx(taylor.reference_loss(theta, np.eye(5)[y], probs).mean(), rel=1e-4)
    assert len(traces) == 1
    assert len(set(values)) == 3


def test_model_save_and_load_without_custom_objects_gives_the_same_loss(tmp_path):
    x, y = data()
    model = tiny_model()
    model.compile(optimizer="sgd", loss=TaylorGLOLoss(MNIST_THETA, order=3, name="mnist_loss"))
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.loss, TaylorGLOLoss)
    np.testing.assert_array_equal(reloaded.loss.theta, MNIST_THETA)
    probs = model.predict(x, verbose=0)
    assert float(reloaded.loss(y, probs)) == float(model.loss(y, probs))
    assert reloaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TaylorGLOLoss(
            np.random.default_rng(5).normal(size=13),
            inputs=("x", "y", "t"),
            from_logits=True,
            convention="folded",
            reduction="sum",
        ),
        lambda: TaylorGLOLoss(np.random.default_rng(6).normal(size=12), order=4),
        lambda: BaikalLoss(from_logits=True),
        lambda: Poly1Loss(epsilon=2.0, label_smoothing=0.1),
    ],
)
def test_config_and_json_round_trips_give_equal_values(make, tmp_path):
    loss = make()
    _, one_hot, y_pred = batch()
    expected = as_numpy(loss(one_hot, y_pred))
    from_config = type(loss).from_config(loss.get_config())
    from_json = losses.load_json(losses.save_json(loss, tmp_path / "loss.json"))
    from_dict = losses.get(keras.saving.serialize_keras_object(loss))
    for copy in (from_config, from_json, from_dict):
        assert type(copy) is type(loss)
        assert copy.get_config() == loss.get_config()
        np.testing.assert_array_equal(as_numpy(copy(one_hot, y_pred)), expected)


def test_json_written_without_tensorflow_loads_as_the_same_loss(tmp_path):
    path = tmp_path / "best.json"
    path.write_text(json.dumps(taylor.keras_config(MNIST_THETA)))
    loaded = losses.load_json(path)
    assert loaded.get_config() == TaylorGLOLoss(MNIST_THETA).get_config()
    bare = losses.get(taylor.keras_config(MNIST_THETA)["config"])
    np.testing.assert_array_equal(bare.theta, MNIST_THETA)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"name": "taylorglo_best"},
        {"order": 4, "inputs": ("y", "x"), "from_logits": True, "convention": "folded", "reduction": "sum"},
        {"inputs": ("x", "y", "t"), "reduction": None, "dtype": "float64"},
    ],
)
def test_keras_serialization_is_exactly_the_tensorflow_free_config(options):
    # The result folder writes best_loss.json with taylor.keras_config; Keras must write the very same object.
    expansion = taylor.Expansion(tuple(options.get("inputs", ("x", "y"))), options.get("order", 3))
    theta = np.random.default_rng(8).normal(size=expansion.num_params).tolist()
    loss = TaylorGLOLoss(theta, **options)
    assert keras.saving.serialize_keras_object(loss) == taylor.keras_config(theta, **options)


def test_get_resolves_names_and_reports_unknown_ones(tmp_path):
    assert isinstance(losses.get("cross_entropy"), keras.losses.CategoricalCrossentropy)
    assert isinstance(losses.get("sparse_cross_entropy"), keras.losses.SparseCategoricalCrossentropy)
    assert isinstance(losses.get("baikal"), BaikalLoss)
    assert isinstance(losses.get("poly1"), Poly1Loss)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        losses.get("hinge")
    with pytest.raises(ValueError, match="does not exist"):
        losses.get(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        losses.load_json(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="'class_name'.*'theta'"):
        losses.get({"order": 3})


def test_mixed_precision_model_gets_a_float32_loss():
    x, y = data()
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        model = tiny_model()
        loss = TaylorGLOLoss(MNIST_THETA, dtype="mixed_float16")
        assert loss.dtype == "float32"
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
        probs = model.predict(x, verbose=0)
        assert probs.dtype == np.float16
        value = model.train_on_batch(x, y)
        expected = taylor.reference_loss(MNIST_THETA, np.eye(5)[y], probs.astype(np.float64)).mean()
        assert float(value) == pytest.approx(expected, rel=1e-4)
        assert loss(y, probs).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bfloat16_dtype_computes_in_float32():
    assert TaylorGLOLoss(MNIST_THETA, dtype="mixed_bfloat16").dtype == "float32"
    assert BaikalLoss(dtype="bfloat16").dtype == "float32"


def test_training_progress_callback_feeds_t_without_retracing():
    x, y = data(num_samples=40)
    theta = np.zeros(13)
    theta[3] = 1.0  # coefficient of (y - a_y): loss does not depend on t ...
    loss = TaylorGLOLoss(theta, inputs=("x", "y", "t"))
    traces, seen = [], []
    original_call = loss.call
    loss.call = lambda *args: (traces.append(1), original_call(*args))[1]
    model = tiny_model()
    model.compile(optimizer="sgd", loss=loss)
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(loss.progress))
    model.fit(x, y, batch_size=10, epochs=2, verbose=0, callbacks=[losses.TrainingProgress(total_steps=8), record])
    assert seen == pytest.approx([i / 8 for i in range(8)])
    assert len(traces) == 1
    with pytest.raises(ValueError, match="total_steps"):
        losses.TrainingProgress(0)


def test_time_varying_loss_changes_with_progress():
    expansion = taylor.Expansion(("x", "y", "t"), 3)
    theta = np.zeros(expansion.num_params)
    theta[3 + expansion.multi_indices.index((0, 1, 1))] = 1.0  # the y*t term
    _, one_hot, y_pred = batch()
    loss = TaylorGLOLoss(theta, inputs=("x", "y", "t"))
    values = []
    for t in (0.0, 1.0):
        loss.set_progress(t)
        values.append(float(loss(one_hot, y_pred)))
        assert values[-1] == pytest.approx(
            taylor.reference_loss(theta, one_hot, y_pred, inputs=("x", "y", "t"), progress=t).mean(), rel=1e-5, abs=1e-7
        )
    assert values[0] != values[1]


# -- baselines --------------------------------------------------------------------------------
def test_baikal_matches_its_formula():
    labels, one_hot, y_pred = batch()
    expected = -np.mean(np.log(y_pred) - one_hot / y_pred, axis=-1)
    np.testing.assert_allclose(as_numpy(BaikalLoss(reduction=None)(labels, y_pred)), expected, rtol=1e-5)


def test_poly1_is_cross_entropy_plus_epsilon_times_one_minus_pt():
    labels, one_hot, y_pred = batch()
    ce = as_numpy(keras.losses.CategoricalCrossentropy(reduction=None)(one_hot, y_pred))
    pt = np.sum(one_hot * y_pred, axis=-1)
    np.testing.assert_allclose(
        as_numpy(Poly1Loss(epsilon=2.0, reduction=None)(labels, y_pred)), ce + 2.0 * (1 - pt), rtol=1e-5
    )


def test_baselines_stay_finite_at_zero_probability():
    one_hot = np.array([[1.0, 0.0]], np.float32)
    y_pred = np.array([[0.0, 1.0]], np.float32)
    assert np.isfinite(float(BaikalLoss()(one_hot, y_pred)))
    assert np.isfinite(float(Poly1Loss()(one_hot, y_pred)))


# -- Taylor approximation of an existing loss (Appendix F) ------------------------------------
def cross_entropy_partial(alpha_x, alpha_y, x=0.5, y=0.5):
    """d^a_x d^b_y of f(x, y) = x log y for b >= 1, analytically: d^b_y log y = (-1)^(b-1) (b-1)! / y^b."""
    dlog = (-1) ** (alpha_y - 1) * math.factorial(alpha_y - 1) / y**alpha_y
    return {0: x * dlog, 1: dlog}.get(alpha_x, 0.0)


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_cross_entropy_approximation_matches_analytic_derivatives_at_half(order):
    approx = TaylorGLOLoss.from_loss(keras.losses.CategoricalCrossentropy(), center=(0.5, 0.5), order=order)
    expansion = taylor.Expansion(("x", "y"), order)
    expected = [cross_entropy_partial(*alpha) for alpha in expansion.multi_indices]
    np.testing.assert_allclose(approx.theta, [0.5, 0.5] + expected, rtol=1e-12)
    if order == 3:
        np.testing.assert_allclose(approx.theta, [0.5, 0.5, 1.0, -2.0, 8.0, 2.0, -4.0, 0.0])


def test_cross_entropy_approximation_is_cross_entropy_over_n_near_the_centre():
    approx = TaylorGLOLoss.from_loss("cross_entropy", order=5, reduction=None)
    one_hot = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    y_pred = np.array([[0.55, 0.45], [0.48, 0.52]], np.float32)
    ce = as_numpy(keras.losses.CategoricalCrossentropy(reduction=None)(one_hot, y_pred))
    # the y-free terms are trimmed: compare differences between samples, which they cancel from.
    diff = as_numpy(approx(one_hot, y_pred))
    assert diff[0] - diff[1] == pytest.approx((ce[0] - ce[1]) / 2, rel=1e-3)
    scaled = TaylorGLOLoss.from_loss("cross_entropy", order=3, scale=10.0)
    np.testing.assert_allclose(scaled.theta[2:], 10.0 * TaylorGLOLoss.from_loss("cross_entropy").theta[2:])


def test_from_loss_of_a_per_class_function_and_of_baikal():
    cubic = TaylorGLOLoss.from_loss(lambda x, y: x * y**3, center=(0.0, 0.0), order=3)
    # every y-derivative of x y^3 of order <= 3 keeps a factor x or y, so all vanish at the origin
    np.testing.assert_allclose(cubic.theta, [0.0] * 8, atol=1e-12)
    cubic = TaylorGLOLoss.from_loss(lambda x, y: x * y**3, center=(1.0, 1.0), order=3)
    # f_y=3, f_yy=6, f_yyy=6, f_xy=3, f_xyy=6, f_xxy=0
    np.testing.assert_allclose(cubic.theta, [1, 1, 3, 6, 6, 3, 6, 0], atol=1e-12)
    baikal = TaylorGLOLoss.from_loss(BaikalLoss(), order=3, convention="folded")
    # f = log y - x/y at (0.5, 0.5): f_y=4, f_yy=-12, f_yyy=64, f_xy=4, f_xyy=-16, f_xxy=0; folded divides by alpha!
    np.testing.assert_allclose(baikal.theta, [0.5, 0.5, 4, -6, 64 / 6, 4, -8, 0], rtol=1e-10)


def test_from_loss_rejects_what_it_cannot_approximate():
    with pytest.raises(ValueError, match="from_logits=True"):
        TaylorGLOLoss.from_loss(keras.losses.CategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="no per-class form"):
        TaylorGLOLoss.from_loss(keras.losses.MeanSquaredError())
    with pytest.raises(ValueError, match="center"):
        TaylorGLOLoss.from_loss("cross_entropy", center=(0.5,))
    with pytest.raises(ValueError, match="label 'x' among inputs=\\('y',\\)"):
        TaylorGLOLoss.from_loss("cross_entropy", center=(0.5,), inputs=("y",))


def test_from_loss_takes_centres_in_inputs_order_but_always_calls_f_with_x_then_y():
    f = lambda x, y: x * y**2  # noqa: E731 - not symmetric in x and y
    xy = TaylorGLOLoss.from_loss(f, center=(0.2, 0.7), order=2)
    yx = TaylorGLOLoss.from_loss(f, center=(0.7, 0.2), order=2, inputs=("y", "x"))
    # at (x, y) = (0.2, 0.7): f_y = 2xy = 0.28, f_yy = 2x = 0.4, f_xy = 2y = 1.4
    np.testing.assert_allclose(xy.theta, [0.2, 0.7, 0.28, 0.4, 1.4], atol=1e-12)
    np.testing.assert_allclose(yx.theta, [0.7, 0.2, 0.28, 1.4, 0.4], atol=1e-12)  # terms y, yx, y^2
    _, one_hot, y_pred = batch()
    np.testing.assert_allclose(as_numpy(yx(one_hot, y_pred)), as_numpy(xy(one_hot, y_pred)), rtol=1e-6)


def test_from_loss_with_a_progress_input_gives_losses_without_t_zero_t_coefficients():
    for loss_fn in ("cross_entropy", BaikalLoss(), Poly1Loss()):
        timed = TaylorGLOLoss.from_loss(loss_fn, center=(0.5, 0.5, 0.0), inputs=("x", "y", "t"))
        plain = TaylorGLOLoss.from_loss(loss_fn, center=(0.5, 0.5))
        by_index = dict(zip(timed.expansion.multi_indices, timed.theta[3:]))
        assert all(by_index[alpha] == 0.0 for alpha in by_index if alpha[2] > 0)
        np.testing.assert_allclose([by_index[(a, b, 0)] for a, b in plain.expansion.multi_indices], plain.theta[2:])


def test_order_2_cross_entropy_approximation_is_mean_squared_error_up_to_a_constant():
    # f = (y-1/2) - (y-1/2)^2 + 2 (x-1/2)(y-1/2) = -y^2 + 2xy + (terms free of y or summing to a
    # constant over classes), so L = (1/n) sum_i (y_i - x_i)^2 + const: Keras's MeanSquaredError.
    order2 = TaylorGLOLoss.from_loss("cross_entropy", order=2, reduction=None)
    _, one_hot, y_pred = batch(num_samples=32, num_classes=10)
    difference = as_numpy(order2(one_hot, y_pred)) - as_numpy(
        keras.losses.MeanSquaredError(reduction=None)(one_hot, y_pred)
    )
    np.testing.assert_allclose(difference, difference[0], atol=1e-6)


def test_deep_copied_loss_has_its_own_theta():
    import copy

    loss = TaylorGLOLoss(MNIST_THETA)
    clone = copy.deepcopy(loss)
    clone.set_theta(np.zeros(8))
    np.testing.assert_allclose(as_numpy(loss.theta_variable), np.float32(MNIST_THETA))
    np.testing.assert_array_equal(loss.theta, MNIST_THETA)


def test_training_progress_needs_a_loss_with_progress():
    x, y = data()
    model = tiny_model()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy())
    with pytest.raises(ValueError, match="needs a loss with set_progress"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[losses.TrainingProgress(total_steps=4)])


def test_poly1_label_smoothing_must_lie_in_the_unit_interval():
    with pytest.raises(ValueError, match="label_smoothing=2"):
        Poly1Loss(label_smoothing=2)
