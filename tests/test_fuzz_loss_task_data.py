"""Property-based attacks on theta, expansions, the Keras loss, Task.from_dict and dataset URIs.

Every bad value is a ValueError naming it (or the expected length), never a TypeError,
OverflowError or TensorFlow error.
"""

import math
import os
from pathlib import PurePosixPath

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taylorglo_tf import taylor
from taylorglo_tf.data import loader
from taylorglo_tf.training.task import Task

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.sampled_from([10**400, -(10**400), 1e308, 3.5e38]),
)
odd = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=6), st.binary(max_size=4))
thetas = st.one_of(
    st.lists(numbers, max_size=12),
    st.lists(st.lists(numbers, max_size=3), max_size=3),
    odd,
    st.lists(odd, max_size=9),
)
orders = st.one_of(st.integers(min_value=-3, max_value=4), odd, st.sampled_from([11, 10**6, 10**400, 2.5, "3"]))
inputs_ = st.one_of(
    st.lists(st.sampled_from(["x", "y", "t", "z", "", "Y"]), max_size=4),
    st.text(max_size=3),
    st.none(),
    st.integers(),
    st.lists(odd, max_size=2),
)


def _valid_expansion(order, inputs):
    try:
        return taylor.Expansion(inputs, order)
    except ValueError:
        return None


@FUZZ
@given(orders, inputs_)
def test_an_expansion_is_built_or_refused_with_a_value_error(order, inputs):
    try:
        expansion = taylor.Expansion(inputs, order)
    except ValueError as err:
        assert "order" in str(err) or "inputs" in str(err) or "variable" in str(err), err
        return
    assert expansion.num_params == taylor.expected_theta_length(order, inputs)


@FUZZ
@given(
    st.integers(min_value=1, max_value=4), st.sampled_from([("x", "y"), ("y",), ("x", "y", "t"), ("y", "t")]), thetas
)
def test_theta_of_any_shape_or_value_is_accepted_only_at_the_expected_length(order, inputs, theta):
    expansion = taylor.Expansion(inputs, order)
    try:
        arr = expansion.validate(theta)
    except ValueError as err:
        assert str(expansion.num_params) in str(err) or "non-finite" in str(err), err
        return
    assert arr.shape == (expansion.num_params,) and np.all(np.isfinite(arr))


@FUZZ
@given(st.integers(min_value=1, max_value=3), st.sampled_from([("x", "y"), ("y",), ("x", "y", "t")]), thetas)
def test_the_numpy_reference_loss_refuses_bad_theta_with_a_value_error(order, inputs, theta):
    values = np.full((2, 3), 0.5)
    try:
        out = taylor.reference_loss(theta, values, values, order=order, inputs=inputs)
    except ValueError as err:
        assert str(taylor.expected_theta_length(order, inputs)) in str(err) or "theta" in str(err), err
        return
    assert np.shape(out) == (2,)


@pytest.fixture(scope="module")
def keras_loss():
    from taylorglo_tf.losses import TaylorGLOLoss

    return TaylorGLOLoss


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(thetas, orders, inputs_)
def test_the_keras_loss_refuses_any_bad_theta_order_or_inputs_with_a_value_error(keras_loss, theta, order, inputs):
    expansion = _valid_expansion(order, inputs)
    try:
        loss = keras_loss(theta, order=order, inputs=inputs)
    except ValueError as err:
        message = str(err)
        if expansion is None:
            assert "order" in message or "inputs" in message or "variable" in message, message
        else:
            assert str(expansion.num_params) in message or "theta" in message, message
        return
    assert expansion is not None and loss.theta.shape == (expansion.num_params,)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(thetas)
def test_set_theta_refuses_bad_values_and_keeps_the_previous_theta(keras_loss, theta):
    loss = keras_loss(taylor.PAPER_MNIST_THETA)
    before = loss.theta
    try:
        loss.set_theta(theta)
    except ValueError as err:
        assert "8" in str(err) or "theta" in str(err), err
        np.testing.assert_array_equal(loss.theta, before)
        np.testing.assert_array_equal(np.asarray(loss.theta_variable), before.astype(np.float32))
    else:
        np.testing.assert_array_equal(loss.theta, np.asarray(theta, dtype=np.float64))


TASK_FIELDS = [
    "dataset",
    "model",
    "steps",
    "batch_size",
    "fraction",
    "augmentation",
    "seed",
    "abort_threshold",
    "abort_check_epoch",
    "abort_attempts",
    "max_attempts",
    "data_dir",
]


@FUZZ
@given(
    st.dictionaries(
        st.one_of(st.sampled_from(TASK_FIELDS), st.text(max_size=6), st.integers()),
        st.one_of(
            odd,
            st.dictionaries(st.one_of(st.text(max_size=4), st.integers()), odd, max_size=2),
            st.lists(odd, max_size=2),
        ),
        max_size=5,
    )
)
def test_task_from_any_mapping_is_a_task_or_a_value_error_naming_the_field(data):
    try:
        task = Task.from_dict(data)
    except ValueError as err:
        message = str(err)
        assert any(name in message for name in TASK_FIELDS) or "unknown Task field" in message, message
        return
    assert Task.from_dict(task.to_dict()) == task


@pytest.mark.parametrize("value", [None, 3, "task", ["dataset"], b"x"])
def test_a_task_that_is_not_a_mapping_is_a_value_error(value):
    with pytest.raises(ValueError, match="mapping"):
        Task.from_dict(value)


uris = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "\ud800",
            "tfds:",
            "tfds:mnist?",
            "tfds:mnist?a",
            "tfds:mnist?=1",
            "idx:",
            "idx:\x00",
            "npz:\ud800",
            "npz:/nonexistent.npz",
            "idx:../../none",
            "digits",
            "DIGITS",
            "tfds",
            "csv:x",
        ]
    ),
    st.builds(lambda s, r: f"{s}:{r}", st.sampled_from(["tfds", "idx", "npz"]), st.text(max_size=12)),
    odd,
)


@FUZZ
@given(uris)
def test_any_dataset_uri_parses_or_is_a_value_error_naming_it(uri):
    try:
        scheme, _target, options = loader.parse_uri(uri)
    except ValueError as err:
        assert repr(uri) in str(err) or "option" in str(err), err
        return
    assert scheme in loader.SCHEMES + loader.PLAIN and isinstance(options, dict)


@settings(max_examples=40, deadline=None)
@given(st.builds(lambda s, r: f"{s}:{r}", st.sampled_from(["idx", "npz"]), st.text(min_size=1, max_size=12)))
def test_loading_a_file_uri_that_names_nothing_usable_is_a_clear_error(uri):
    # a fresh empty directory: nothing a URI names exists there
    import tempfile

    with tempfile.TemporaryDirectory() as empty:
        try:
            loader.load(uri, data_dir=empty)
        except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
            target = uri.partition(":")[2]
            named = (
                {repr(target)}
                if "\x00" in target
                else {
                    repr(target),
                    str(PurePosixPath(target)),
                    os.path.expanduser(str(PurePosixPath(target))),
                    os.path.normpath(os.path.join(empty, target)),
                }
            )
            assert any(name in str(err) for name in named), err
            return
    pytest.fail(f"{uri!r} loaded from an empty directory")


@pytest.mark.parametrize("fraction, seed", [(0, 0), (1.5, 0), (math.nan, 0), (1, -1), (1, 1.5), (1, "0")])
def test_load_names_a_bad_fraction_or_seed(fraction, seed):
    with pytest.raises(ValueError, match="fraction|seed"):
        loader.load("digits", fraction=fraction, seed=seed)


tfds_queries = st.one_of(
    st.just(""),
    st.builds(
        lambda k, v: f"?{k}={v}",
        st.sampled_from(["train", "val", "test", "norm", "x"]),
        st.one_of(
            st.text(min_size=1, max_size=8).filter(lambda v: "&" not in v),
            st.sampled_from(["train[:200%]", "train[", "bogus", "unit"]),
        ),
    ),
)


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(st.text(max_size=10), st.sampled_from(["mnist", "zzz", "MNIST", "../../etc", "mnist:9.9", "\x00"])),
    tfds_queries,
)
def test_a_tfds_uri_with_any_name_or_split_is_a_clear_error_without_data(tmp_path_factory, name, query):
    uri = f"tfds:{name}{query}"
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        loader.load(uri, data_dir=str(tmp_path_factory.mktemp("empty")), download=False)
    assert str(err.value).startswith(("tfds:", "unknown TFDS dataset", "dataset URI", "unknown dataset")), err.value


IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
idx_bytes = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda dtype, dims, body: bytes([0, 0, dtype, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + body,
        st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x07]),
        st.lists(st.one_of(st.integers(min_value=0, max_value=4), st.just(2**32 - 1)), max_size=3),
        st.binary(max_size=40),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_a_corrupt_npz_file_is_a_value_error_naming_it(tmp_path, content):
    (tmp_path / "bad.npz").write_bytes(content)
    with pytest.raises(ValueError, match="bad.npz"):
        loader.load("npz:bad.npz", data_dir=tmp_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(idx_bytes, min_size=4, max_size=4), st.booleans())
def test_corrupt_or_truncated_idx_files_are_a_value_error_naming_them(tmp_path, contents, gzipped):
    import gzip

    folder = tmp_path / ("gz" if gzipped else "raw")
    folder.mkdir(exist_ok=True)
    for name, content in zip(IDX_NAMES, contents):
        for stale in folder.glob(f"{name}*"):
            stale.unlink()
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content) if content[:1] != b"x" else content)
        else:
            (folder / name).write_bytes(content)
    try:
        splits = loader.load(f"idx:{folder.name}", data_dir=tmp_path)
    except ValueError as err:
        assert folder.name in str(err), err
        return
    assert len(splits.x_train) + len(splits.x_val) > 0  # only a consistent set loads


arrays = st.one_of(
    odd,
    st.lists(numbers, max_size=4),
    st.lists(st.lists(st.floats(min_value=0, max_value=1), min_size=1, max_size=3), min_size=1, max_size=3),
    st.lists(odd, max_size=3),
    st.dictionaries(st.text(max_size=2), odd, max_size=2),
)


@FUZZ
@given(
    st.sampled_from([("x", "y"), ("y",), ("x", "y", "t")]),
    st.one_of(
        st.lists(arrays, max_size=4), st.dictionaries(st.sampled_from(["x", "y", "t", "z"]), arrays, max_size=3), odd
    ),
)
def test_evaluating_an_expansion_on_any_values_is_an_array_or_a_value_error(inputs, values):
    expansion = taylor.Expansion(inputs, 2)
    theta = np.linspace(0.1, 0.9, expansion.num_params)
    try:
        with np.errstate(all="ignore"):
            out = expansion.evaluate(theta, values)
    except ValueError as err:
        assert "values" in str(err) or "inputs" in str(err) or "shape" in str(err), err
        return
    assert isinstance(out, np.ndarray)


@FUZZ
@given(arrays, arrays, st.one_of(st.floats(min_value=0, max_value=1), odd))
def test_the_reference_loss_on_any_labels_predictions_and_progress_is_an_array_or_a_value_error(y_true, y_pred, t):
    try:
        with np.errstate(all="ignore"):
            out = taylor.reference_loss(taylor.PAPER_MNIST_THETA, y_true, y_pred, progress=t)
    except ValueError as err:
        assert any(word in str(err) for word in ("y_true", "y_pred", "progress")), err
        return
    assert np.shape(out) == np.shape(y_true)[:-1]
