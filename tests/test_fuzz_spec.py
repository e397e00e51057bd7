"""Property-based attacks on spec parsing and validation: every bad spec is a SpecError naming a field path."""

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from taylorglo_tf import spec
from taylorglo_tf.spec import SpecError

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MINIMAL = {"task": {"dataset": "digits", "model": "tiny", "steps": 100}}
SECTIONS = {
    "task": [
        "dataset",
        "model",
        "steps",
        "batch_size",
        "train_fraction",
        "augmentation",
        "seed",
        "abort_accuracy",
        "abort_epochs",
        "trainFraction",
        "batchSize",
    ],
    "loss": ["order", "inputs"],
    "search": [
        "population",
        "generations",
        "sigma0",
        "seed",
        "max_attempts",
        "invariant_prescreen",
        "num_classes",
        "maxAttempts",
    ],
    "augmentation": ["flip_crop", "crop_padding", "cutout_length", "cutmix_probability", "cutmix_alpha"],
}

# Odd values: huge, negative, non-finite, wrong types, odd strings (NUL, lone surrogates, unicode, traversal).
odd_numbers = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([10**400, -(10**400), 2**31, 2**63, -1, 0, 1]),
    st.floats(allow_nan=True, allow_infinity=True),
)
odd_strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "\x00",
            "\ud800",
            "..",
            "/etc/passwd",
            "idx:../x",
            "npz:/abs.npz",
            "idx:a/../../b",
            "npz:~/x.npz",
            "tfds:",
            "tfds:../x",
            "idx:\x00",
            "idx:a\\b",
            "npz:é/ü.npz",
            "tfds:MNIST",
            "idx:",
            ":",
            "digits ",
            "x" * 1000,
        ]
    ),
)
scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_strings)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


def _section(name):
    keys = st.one_of(st.sampled_from(SECTIONS[name]), st.text(max_size=10))
    inner = (
        values
        if name != "task"
        else st.one_of(values, st.dictionaries(st.sampled_from(SECTIONS["augmentation"]), values, max_size=3))
    )
    return st.dictionaries(keys, inner, max_size=4)


def _merge(base, extra):
    out = json.loads(json.dumps(base))
    for key, value in extra.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key].update(value)
        else:
            out[key] = value
    return out


specs = st.builds(
    _merge,
    st.just(MINIMAL),
    st.dictionaries(
        st.sampled_from(["task", "loss", "search", "name", "tasks", 3]),
        st.one_of(_section("task"), _section("loss"), _section("search"), values),
        max_size=4,
    ),
)
# Keys may also be non-strings at the top level or below.
weird_keys = st.dictionaries(
    st.one_of(st.integers(), st.none(), st.booleans(), st.text(max_size=5)), values, max_size=4
)


def assert_named_spec_error(source) -> SpecError | None:
    """load_spec either succeeds or raises SpecError whose field is a path under ``spec``."""
    try:
        result = spec.load_spec(source)
    except SpecError as err:
        assert err.field == "spec" or err.field.startswith("spec."), err.field
        assert str(err).startswith(err.field + ": ") and err.message
        return err
    spec.validate(result)  # an accepted spec stays valid
    return None


@FUZZ
@given(specs)
def test_any_spec_dict_is_accepted_or_rejected_with_a_spec_error_naming_a_field(data):
    assert_named_spec_error(data)


@FUZZ
@given(weird_keys)
def test_any_mapping_with_odd_keys_is_a_spec_error_or_a_spec(data):
    assert_named_spec_error(data)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["task", "loss", "search", "augmentation"]), st.text(min_size=1, max_size=12))
def test_an_unknown_key_at_any_level_is_named_with_its_path(section, key):
    known = set(SECTIONS[section]) | {
        "trainFraction",
        "batchSize",
        "abortAccuracy",
        "abortEpochs",
        "maxAttempts",
        "invariantPrescreen",
        "numClasses",
        "flipCrop",
        "cropPadding",
        "cutoutLength",
        "cutmixProbability",
        "cutmixAlpha",
    }
    if key in known:
        return
    data = json.loads(json.dumps(MINIMAL))
    if section == "augmentation":
        data["task"]["augmentation"] = {key: 1}
        expected = f"spec.task.augmentation.{key}"
    else:
        data.setdefault(section, {})[key] = 1
        expected = f"spec.{section}.{key}"
    err = assert_named_spec_error(data)
    assert err is not None and err.field == expected


@FUZZ
@given(
    st.sampled_from([(s, k) for s in ("task", "loss", "search") for k in SECTIONS[s] if "_" in k or k.islower()]),
    st.one_of(odd_numbers, odd_strings, st.booleans(), st.lists(scalars, max_size=2)),
)
def test_an_odd_value_in_a_known_field_is_named_by_that_field(section_key, value):
    section, key = section_key
    data = _merge(MINIMAL, {section: {key: value}})
    err = assert_named_spec_error(data)
    if err is not None:
        assert err.field.startswith(f"spec.{section}."), err
        assert err.field.split(".")[2].split("[")[0] in {key, *_camel_to_snake(key)}, err


def _camel_to_snake(key):
    return {"".join("_" + c.lower() if c.isupper() else c for c in key)}


@FUZZ
@given(odd_strings)
def test_any_dataset_string_is_valid_or_refused_naming_the_dataset_field(uri):
    err = assert_named_spec_error(_merge(MINIMAL, {"task": {"dataset": uri}}))
    if err is None:
        scheme, _, rest = uri.partition(":")
        assert (
            uri == "digits"
            or scheme == "tfds"
            or (rest and not rest.startswith(("/", "~")) and ".." not in rest.split("/") and "\x00" not in rest)
        )
    else:
        assert err.field == "spec.task.dataset"


@pytest.mark.parametrize(
    "uri",
    ["idx:../x", "npz:/abs.npz", "idx:a/../../b", "npz:~/x.npz", "idx:\x00", "idx:a\\b", "tfds:../x", "tfds:", "idx:"],
)
def test_traversal_absolute_and_nul_dataset_paths_are_refused(uri):
    err = assert_named_spec_error(_merge(MINIMAL, {"task": {"dataset": uri}}))
    assert err is not None and err.field == "spec.task.dataset"


@pytest.mark.parametrize(
    "field, value",
    [
        ("search.sigma0", 10**400),
        ("task.train_fraction", -(10**400)),
        ("search.population", 10**400),
        ("task.seed", 2**64),
        ("search.sigma0", math.nan),
        ("task.steps", math.inf),
    ],
)
def test_numbers_too_big_for_any_float_or_integer_are_named(field, value):
    section, key = field.split(".")
    err = assert_named_spec_error(_merge(MINIMAL, {section: {key: value}}))
    assert err is not None and err.field == f"spec.{field}"


@pytest.mark.parametrize("field", ["name", "task.model", "task.dataset", "loss.inputs"])
def test_a_string_that_is_not_valid_unicode_is_named(field):
    value = "a\ud800b"
    if "." in field:
        section, key = field.split(".")
        data = _merge(MINIMAL, {section: {key: [value] if key == "inputs" else value}})
    else:
        data = _merge(MINIMAL, {field: value})
    err = assert_named_spec_error(data)
    assert err is not None and err.field.startswith(f"spec.{field}")


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=60))
def test_a_spec_file_with_arbitrary_bytes_is_a_spec_error(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "s.yaml"
    path.write_bytes(content)
    assert_named_spec_error(path)


@pytest.mark.parametrize("name", ["a\x00b.yaml", "", "."])
def test_a_spec_path_that_cannot_be_opened_is_a_spec_error_naming_it(tmp_path, name):
    err = assert_named_spec_error(tmp_path / name if name else "")
    assert err is not None and err.field == "spec" and "spec file" in err.message
