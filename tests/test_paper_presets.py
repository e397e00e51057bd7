"""The paper's presets (docs/examples/paper/): every spec validates, and its task trains.

Each preset's task trains 2 steps with its real model and augmentation on mock
TFDS data of the real image shape and class count (``tfds.testing.mock_data``;
80 examples per split and batches of 4, to stay fast on a CPU). The heaviest
models train under ``-m slow``; the default run still builds each of them at its
real input shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from taylorglo_tf import models
from taylorglo_tf import spec as spec_module

PRESETS = Path(__file__).resolve().parent.parent / "docs" / "examples" / "paper"
PRESET_FILES = sorted(PRESETS.glob("*.yaml"))
# Image shape and classes of each dataset the presets use (TFDS catalog).
REAL_SHAPES = {
    "mnist": ((28, 28, 1), 10),
    "cifar10": ((32, 32, 3), 10),
    "cifar100": ((32, 32, 3), 100),
    "svhn_cropped": ((32, 32, 3), 10),
}
PAPER_TRAIN_SIZE = {"mnist": 55_000, "cifar10": 45_000, "cifar100": 45_000, "svhn_cropped": 47_225}  # Appendix A
# Over ~20 s for two steps on a shared 2-core CPU (30-200 s measured): trained under -m slow only.
HEAVY_MODELS = {"pyramidnet_110_48", "wide_resnet_16_8", "wide_resnet_28_5"}
MOCK_EXAMPLES = 80  # 10%-data presets keep 8, two batches
SMOKE_BATCH = 4


def _load(path: Path):
    return spec_module.load_spec(path)


def test_there_is_a_preset_for_every_experiment_of_the_paper():
    names = {path.stem for path in PRESET_FILES}
    table_1 = {
        "mnist-basic-cnn",
        "cifar10-alexnet",
        "cifar10-alexnet-cutout",
        "cifar10-alexnet-cutmix",
        "cifar10-preresnet-20",
        "cifar10-allcnn-c",
        "cifar10-allcnn-c-cutout",
        "cifar10-allcnn-c-cutmix",
        "cifar10-wrn-16-8",
        "cifar10-wrn-16-8-cutout",
        "cifar10-wrn-28-5",
        "cifar10-wrn-28-5-cutout",
        "cifar100-pyramidnet-110-48",
        "cifar100-pyramidnet-110-48-cutout",
        "svhn-wrn-16-8",
        "svhn-wrn-16-8-cutout",
        "svhn-wrn-28-5",
        "svhn-wrn-28-5-cutout",
    }
    reduced_data = {"mnist-basic-cnn-10pct-data", "cifar10-allcnn-c-10pct-data"}
    evaluation_length = {"mnist-basic-cnn-200-steps", "mnist-basic-cnn-20000-steps"}
    order_sweep = {f"cifar10-allcnn-c-order-{k}" for k in (2, 3, 4, 5)}
    assert names == table_1 | reduced_data | evaluation_length | order_sweep


@pytest.mark.parametrize("path", PRESET_FILES, ids=lambda p: p.stem)
def test_every_preset_validates_and_carries_the_papers_row(path):
    spec = _load(path)
    assert spec.name == path.stem
    assert spec.HasField("paper") and spec.paper.table
    assert spec.task.dataset.removeprefix("tfds:") in REAL_SHAPES
    # Partial training is at most the recipe's full run (Appendix D's 20,000 steps is all of it).
    recipe = models.recipe(spec.task.model, spec.task.dataset)
    train = int(PAPER_TRAIN_SIZE[spec.task.dataset.removeprefix("tfds:")] * (spec.task.train_fraction or 1.0))
    full = recipe.total_steps(recipe.steps_per_epoch(train, spec.task.batch_size or recipe.batch_size))
    assert 0 < spec.task.steps <= full


def _mock_as_dataset(self, split, **kwargs):
    """``MOCK_EXAMPLES`` examples of the dataset's real shape and classes for any split string."""
    import tensorflow as tf

    shape, classes = REAL_SHAPES[self.name]
    offset = 7 if "test" in str(split) else 0

    def example(i):
        pixels = tf.random.stateless_uniform(shape, [i + offset, 1], maxval=256, dtype=tf.int32)
        return {"image": tf.cast(pixels, tf.uint8), "label": (i + offset) % classes, "id": tf.strings.as_string(i)}

    return tf.data.Dataset.range(MOCK_EXAMPLES).map(example)


@pytest.fixture
def mock_tfds():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(as_dataset_fn=_mock_as_dataset):
        yield


def _smoke_tasks():
    """One entry per distinct task among the presets, up to its length (the smoke step trains 2)."""
    seen, out = set(), []
    for path in PRESET_FILES:
        spec = _load(path)
        task = type(spec.task)()
        task.CopyFrom(spec.task)
        task.steps = 0
        key = (task.SerializeToString(deterministic=True), spec.loss.order)
        if key in seen:
            continue
        seen.add(key)
        marks = [pytest.mark.slow] if spec.task.model in HEAVY_MODELS else []
        out.append(pytest.param(path, id=path.stem, marks=marks))
    return out


@pytest.mark.parametrize("path", _smoke_tasks())
def test_each_presets_task_trains_two_steps_with_its_real_model_on_mock_data(path, mock_tfds, tmp_path, monkeypatch):
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator, Task
    from taylorglo_tf.training.session import Session

    built = []
    real_build = Session.build_model

    def spy(session):
        model = real_build(session)
        built.append((session.model_name, tuple(model.input_shape[1:]), model.output_shape[-1]))
        return model

    monkeypatch.setattr(Session, "build_model", spy)
    spec = _load(path)
    task = Task.from_proto(spec.task, tmp_path).replace(steps=2, batch_size=SMOKE_BATCH)
    # A loss of the preset's form: the Taylor approximation of cross-entropy of its order.
    loss = TaylorGLOLoss.from_loss("cross_entropy", order=spec.loss.order, inputs=tuple(spec.loss.inputs))
    result = Evaluator().evaluate(loss, task)
    assert result.steps == 2
    assert result.status in ("ok", "diverged")  # two steps cannot be judged; they must run
    shape, classes = REAL_SHAPES[spec.task.dataset.removeprefix("tfds:")]
    assert built and set(built) == {(spec.task.model, shape, classes)}  # the preset's model at the real shape


@pytest.mark.parametrize("model", sorted(HEAVY_MODELS))
def test_the_heaviest_presets_models_build_at_their_real_shape(model):
    users = [p for p in PRESET_FILES if _load(p).task.model == model]
    assert users, f"no preset uses {model}"
    for dataset in sorted({_load(p).task.dataset for p in users}):
        shape, classes = REAL_SHAPES[dataset.removeprefix("tfds:")]
        built = models.build(model, shape, classes)
        assert built.output_shape == (None, classes)
        assert np.isfinite(built.count_params())


def test_the_scaled_reproduction_keeps_the_papers_mnist_protocol_on_embedded_data():
    spec = _load(PRESETS.parent / "mnist-protocol-digits.yaml")
    mnist = _load(PRESETS / "mnist-basic-cnn.yaml")
    assert spec.task.dataset == "digits"  # no download
    assert (spec.search.population, spec.search.sigma0, spec.loss.order) == (
        mnist.search.population,
        mnist.search.sigma0,
        mnist.loss.order,
    )
    assert spec.task.steps * 10 == 2000  # 10% of the --compare-steps 2000 full run, as 2,000 of 20,000
    assert spec.paper.taylorglo == mnist.paper.taylorglo
