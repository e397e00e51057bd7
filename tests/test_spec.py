"""Experiment specs: YAML/JSON/dict parsing, defaults, field-naming validation, dataset paths."""

import json
import os
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from taylorglo_tf import spec
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.spec import SpecError

MINIMAL = {"task": {"dataset": "digits", "model": "tiny", "steps": 100}}


def error_field(source) -> str:
    with pytest.raises(SpecError) as err:
        spec.load_spec(source)
    assert str(err.value).startswith(err.value.field + ": ")
    return err.value.field


def with_(section, **values):
    data = json.loads(json.dumps(MINIMAL))
    data.setdefault(section, {}).update(values)
    return data


def test_a_minimal_spec_gets_the_documented_defaults():
    s = spec.load_spec(MINIMAL)
    assert (s.search.population, s.search.generations, s.search.sigma0, s.search.seed, s.search.max_attempts) == (
        20,
        10,
        1.2,
        1,
        3,
    )
    assert (s.loss.order, list(s.loss.inputs)) == (3, ["x", "y"])
    assert (s.task.train_fraction, s.task.abort_accuracy, s.task.abort_epochs, s.task.batch_size) == (1.0, 0.15, 10, 0)
    assert s.task.lr_scale == 1.0  # the recipe's own learning rate
    assert s.search.num_classes == 10  # inferred for digits
    assert spec.theta_length(s.loss) == 8


def test_yaml_and_json_files_load_to_the_same_spec(tmp_path):
    (tmp_path / "s.yaml").write_text(
        "name: digits search\n"
        "task: {dataset: digits, model: tiny, steps: 100, augmentation: {flip_crop: true}}\n"
        "search:\n  population: 8\n  generations: 5\n  invariantPrescreen: true\n"
    )
    (tmp_path / "s.json").write_text(
        json.dumps(
            {
                "name": "digits search",
                "task": {"dataset": "digits", "model": "tiny", "steps": 100, "augmentation": {"flipCrop": True}},
                "search": {"population": 8, "generations": 5, "invariant_prescreen": True},
            }
        )
    )
    from_yaml, from_json = spec.load_spec(tmp_path / "s.yaml"), spec.load_spec(str(tmp_path / "s.json"))
    assert from_yaml == from_json
    assert from_yaml.task.augmentation.crop_padding == 4  # default when flip_crop is on
    assert spec.to_dict(from_yaml)["search"]["population"] == 8


def test_explicit_values_are_kept():
    s = spec.load_spec(with_("search", population=6, sigma0=0.5, seed=42, max_attempts=5))
    assert (s.search.population, s.search.sigma0, s.search.seed, s.search.max_attempts) == (6, 0.5, 42, 5)


def test_a_zero_that_means_something_is_kept_not_replaced_by_the_default():
    s = spec.load_spec(
        {
            "task": {
                "dataset": "digits",
                "model": "tiny",
                "steps": 100,
                "abort_accuracy": 0,
                "augmentation": {"flip_crop": True, "crop_padding": 0},
            },
            "search": {"seed": 0, "num_classes": 0},
        }
    )
    assert s.search.seed == 0  # a seed like any other, not 1
    assert s.task.abort_accuracy == 0  # the abort rule off, not 0.15
    assert s.task.augmentation.crop_padding == 0  # flips without crops, not 4
    assert s.search.num_classes == 0  # "not known", not inferred from the dataset
    assert int(spec.to_dict(s)["search"]["seed"]) == 0 and spec.to_dict(s)["task"]["abort_accuracy"] == 0  # written out


@pytest.mark.parametrize(
    "section, values, field",
    [
        ("search", {"sigma0": 0}, "spec.search.sigma0"),
        ("search", {"population": 0}, "spec.search.population"),
        ("search", {"generations": 0}, "spec.search.generations"),
        ("search", {"max_attempts": 0}, "spec.search.max_attempts"),
        ("loss", {"order": 0}, "spec.loss.order"),
        ("task", {"lr_scale": 0}, "spec.task.lr_scale"),
        ("task", {"train_fraction": 0}, "spec.task.train_fraction"),
        ("task", {"abort_epochs": 0}, "spec.task.abort_epochs"),
        (
            "task",
            {"augmentation": {"cutmix_probability": 0.5, "cutmix_alpha": 0}},
            "spec.task.augmentation.cutmix_alpha",
        ),
    ],
)
def test_a_zero_that_is_no_valid_value_is_refused_naming_the_field_and_the_value(section, values, field):
    with pytest.raises(SpecError) as err:
        spec.load_spec(with_(section, **values))
    assert err.value.field == field
    assert "0" in err.value.message, err.value.message


def test_a_spec_from_a_client_that_cannot_send_presence_reads_as_unset_and_gets_the_old_defaults():
    # Such a client (stubs from before the fields were optional) leaves a 0 off the wire.
    from taylorglo_tf.rpc import types_pb2

    wire = types_pb2.ExperimentSpec(
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=100)
    ).SerializeToString()
    s = spec.load_spec(types_pb2.ExperimentSpec.FromString(wire))
    assert (s.search.seed, s.search.sigma0, s.task.abort_accuracy, s.task.lr_scale) == (1, 1.2, 0.15, 1.0)


def test_applying_the_defaults_twice_changes_nothing():
    once = spec.apply_defaults(spec.from_dict(with_("search", seed=0)))
    assert spec.apply_defaults(once) == once


def test_unknown_fields_are_named_with_their_path():
    assert error_field(with_("task", stepz=3)) == "spec.task.stepz"
    assert error_field({**MINIMAL, "serch": {}}) == "spec.serch"


@pytest.mark.parametrize(
    "section, values, field",
    [
        ("task", {"steps": "many"}, "spec.task.steps"),
        ("task", {"steps": 2.5}, "spec.task.steps"),
        ("task", {"steps": True}, "spec.task.steps"),
        ("task", {"model": 3}, "spec.task.model"),
        ("task", {"augmentation": []}, "spec.task.augmentation"),
        ("search", {"sigma0": "big"}, "spec.search.sigma0"),
        ("search", {"invariant_prescreen": "yes"}, "spec.search.invariant_prescreen"),
        ("search", {"population": 2**40}, "spec.search.population"),
        ("loss", {"inputs": "xy"}, "spec.loss.inputs"),
        ("loss", {"inputs": ["x", 1]}, "spec.loss.inputs[1]"),
    ],
)
def test_values_of_the_wrong_type_are_named(section, values, field):
    assert error_field(with_(section, **values)) == field


@pytest.mark.parametrize(
    "section, values, field",
    [
        ("task", {"steps": 0}, "spec.task.steps"),
        ("task", {"steps": -5}, "spec.task.steps"),
        ("task", {"batch_size": -1}, "spec.task.batch_size"),
        ("task", {"seed": -1}, "spec.task.seed"),
        ("task", {"seed": 2**32}, "spec.task.seed"),
        ("task", {"train_fraction": 1.01}, "spec.task.train_fraction"),
        ("task", {"abort_accuracy": 2.0}, "spec.task.abort_accuracy"),
        ("task", {"abort_epochs": -1}, "spec.task.abort_epochs"),
        ("task", {"lr_scale": -0.5}, "spec.task.lr_scale"),
        ("task", {"lr_scale": float("inf")}, "spec.task.lr_scale"),
        ("task", {"lr_scale": float("nan")}, "spec.task.lr_scale"),
        ("task", {"model": ""}, "spec.task.model"),
        ("task", {"model": "../evil"}, "spec.task.model"),
        ("task", {"model": "resnet9000"}, "spec.task.model"),
        ("search", {"population": 1}, "spec.search.population"),
        ("search", {"generations": -1}, "spec.search.generations"),
        ("search", {"sigma0": float("inf")}, "spec.search.sigma0"),
        ("search", {"seed": -3}, "spec.search.seed"),
        ("search", {"max_attempts": 101}, "spec.search.max_attempts"),
        ("search", {"num_classes": -2}, "spec.search.num_classes"),
        ("loss", {"order": 11}, "spec.loss.order"),
        ("loss", {"inputs": ["y", "t"]}, "spec.loss.inputs"),
        ("loss", {"inputs": ["x", "y", "y"]}, "spec.loss.inputs"),
    ],
)
def test_out_of_range_values_are_named(section, values, field):
    assert error_field(with_(section, **values)) == field


def test_a_bad_lr_scale_is_refused_naming_the_value_and_a_good_one_is_kept():
    with pytest.raises(spec.SpecError, match=r"spec\.task\.lr_scale: -0\.5 must be a positive, finite multiplier"):
        spec.load_spec(with_("task", lr_scale=-0.5))
    assert spec.load_spec(with_("task", lr_scale=3)).task.lr_scale == 3.0


def test_augmentation_values_are_checked():
    data = with_("task", augmentation={"cutmix_probability": 1.5})
    assert error_field(data) == "spec.task.augmentation.cutmix_probability"
    data = with_("task", augmentation={"cutout_length": -1})
    assert error_field(data) == "spec.task.augmentation.cutout_length"


def test_a_spec_without_a_task_is_refused():
    assert error_field({"search": {"population": 4}}) == "spec.task"


def test_the_prescreen_needs_a_class_count_when_the_dataset_does_not_tell():
    data = with_("search", invariant_prescreen=True)
    data["task"]["dataset"] = "npz:my/data.npz"
    assert error_field(data) == "spec.search.num_classes"
    data["search"]["num_classes"] = 7
    assert spec.load_spec(data).search.num_classes == 7


@pytest.mark.parametrize(
    "uri",
    ["digits", "tfds:mnist", "tfds:cifar100", "tfds:svhn_cropped", "idx:fashion-mnist", "npz:sets/a.npz", "idx:./x"],
)
def test_valid_dataset_uris_are_accepted(uri):
    spec.check_dataset_uri(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "",
        "mnist",
        "http://x/y",
        "tfds:",
        "tfds:../x",
        "idx:",
        "idx:/abs",
        "npz:../up.npz",
        "npz:a/../../b.npz",
        "npz:~root/x",
        "idx:a\\b",
        "idx:a\x00",
    ],
)
def test_invalid_dataset_uris_are_refused(uri):
    with pytest.raises(SpecError) as err:
        spec.check_dataset_uri(uri)
    assert err.value.field == "spec.task.dataset"


def test_dataset_paths_resolve_under_the_data_directory(tmp_path):
    (tmp_path / "sets").mkdir()
    assert spec.resolve_dataset("npz:sets/a.npz", tmp_path) == f"npz:{tmp_path.resolve() / 'sets' / 'a.npz'}"
    assert spec.resolve_dataset("tfds:mnist", tmp_path) == "tfds:mnist"


def test_a_symlink_out_of_the_data_directory_is_refused(tmp_path):
    data_dir, outside = tmp_path / "data", tmp_path / "outside"
    data_dir.mkdir()
    outside.mkdir()
    os.symlink(outside, data_dir / "escape")
    with pytest.raises(SpecError, match="outside the data directory"):
        spec.resolve_dataset("idx:escape", data_dir)


def test_unreadable_and_malformed_files_are_errors_naming_the_file(tmp_path):
    with pytest.raises(SpecError, match="missing.yaml"):
        spec.load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("task: [unclosed\n")
    with pytest.raises(SpecError, match="bad.yaml"):
        spec.load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(SpecError, match="mapping"):
        spec.load_spec(tmp_path / "list.json")


def test_a_proto_spec_is_copied_not_modified():
    proto = spec.from_dict(MINIMAL)
    loaded = spec.load_spec(proto)
    assert loaded.search.population == 20 and proto.search.population == 0


def test_what_one_experiment_may_cost_is_bounded_with_an_error_naming_the_values():
    from taylorglo_tf.spec import MAX_SEARCH_SIZE

    huge = {
        "task": {"dataset": "digits", "model": "tiny", "steps": 10},
        "loss": {"order": 10, "inputs": ["x", "y", "t"]},
        "search": {"population": 10_000},
    }
    with pytest.raises(
        SpecError,
        match=r"spec\.search\.population: population 10000 x 223 parameters "
        r"\(order 10 in x, y, t\) = 2,230,000 exceeds the limit of 200,000",
    ):
        spec.load_spec(huge)
    at_limit = {
        "task": {"dataset": "digits", "model": "tiny", "steps": 10},
        "loss": {"order": 4, "inputs": ["x", "y", "t"]},
        "search": {"population": 6_000},
    }
    assert spec.theta_length(spec.load_spec({**at_limit, "search": {}}).loss) * 6_000 <= MAX_SEARCH_SIZE
    assert spec.load_spec(at_limit).search.population == 6_000


# ----------------------------------------------------------------------------- the proto's stated defaults

TYPES_PROTO = Path(__file__).resolve().parent.parent / "protos" / "taylorglo" / "v1" / "types.proto"
# Spec message -> its place in an ExperimentSpec.
SPEC_MESSAGES = {
    "TaskSpec": "task",
    "AugmentationSpec": "task.augmentation",
    "LossSpec": "loss",
    "SearchSpec": "search",
}
# Defaults that apply only when another field is set: that field, set.
CONDITIONS = {
    "AugmentationSpec.crop_padding": {"flip_crop": True},
    "AugmentationSpec.cutmix_alpha": {"cutmix_probability": 0.5},
}
_STATED = re.compile(r'(?:unset|empty|"") = (\[[^\]]*\]|"[^"]*"|-?[0-9][0-9.e+-]*)')


def proto_comments() -> dict[str, str]:
    """``"Message.field"`` -> the comment lines right above the field's declaration in types.proto."""
    comments: dict[str, str] = {}
    message, pending = None, []
    for line in TYPES_PROTO.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("message "):
            message, pending = stripped.split()[1], []
        elif stripped.startswith("//"):
            pending.append(stripped[2:].strip())
        elif match := re.match(r"(?:optional |repeated )?[\w.]+ (\w+) = \d+;", stripped):
            comments[f"{message}.{match.group(1)}"] = " ".join(pending)
            pending = []
        else:
            pending = []
    return comments


def stated_default(comment: str):
    """The default a field's comment states (``unset = 20``, ``empty = ["x", "y"]``, ``"" = "cmaes"``), or None."""
    match = _STATED.search(comment)
    return None if match is None else json.loads(match.group(1).rstrip("."))


def defaulted(message: str, field: str, *, apply: bool = True):
    """What :func:`spec.apply_defaults` gives ``field`` of ``message`` when a minimal spec leaves it unset
    (``apply=False``: the value before the defaults)."""
    data = json.loads(json.dumps(MINIMAL))
    section = data
    for key in SPEC_MESSAGES[message].split("."):
        section = section.setdefault(key, {})
    section.update(CONDITIONS.get(f"{message}.{field}", {}))
    proto = spec.from_dict(data)
    if apply:
        proto = spec.apply_defaults(proto)
    for key in SPEC_MESSAGES[message].split("."):
        proto = getattr(proto, key)
    value = getattr(proto, field)
    return list(value) if isinstance(value, Iterable) and not isinstance(value, str) else value


STATED_DEFAULTS = {
    name: stated_default(comment)
    for name, comment in proto_comments().items()
    if name.split(".")[0] in SPEC_MESSAGES and stated_default(comment) is not None
}


def test_the_proto_states_the_spec_defaults():
    assert len(STATED_DEFAULTS) >= 14, sorted(STATED_DEFAULTS)


@pytest.mark.parametrize("name", sorted(STATED_DEFAULTS))
def test_each_default_the_proto_states_is_the_one_the_spec_module_applies(name):
    assert defaulted(*name.split(".")) == pytest.approx(STATED_DEFAULTS[name])


def test_every_default_the_spec_module_applies_is_stated_in_the_proto():
    """A default added in spec.py without a word in the proto's comments fails here."""
    applied = {
        f"{message}.{field.name}"
        for message in SPEC_MESSAGES
        for field in getattr(types_pb2, message).DESCRIPTOR.fields
        if field.message_type is None and defaulted(message, field.name) != defaulted(message, field.name, apply=False)
    }
    applied.discard("SearchSpec.num_classes")  # inferred from the dataset (next test)
    assert sorted(applied) == sorted(STATED_DEFAULTS)


def test_the_class_counts_the_proto_states_per_dataset_are_those_the_spec_infers():
    comment = proto_comments()["SearchSpec.num_classes"]
    listed = re.search(r"when known \((.*?)\)", comment).group(1)
    stated = {
        name.strip(): int(count)
        for group in listed.split(";")
        for names, count in [group.rsplit(":", 1)]
        for name in names.split(",")
    }
    assert stated == {dataset.removeprefix("tfds:"): n for dataset, n in spec.KNOWN_NUM_CLASSES.items()}
