"""Model zoo and training recipes, looked up by name.

    from taylorglo_tf import models
    models.names()                                   # ['alexnet', 'allcnn_c', ...]
    model = models.build("wide_resnet_16_8", (32, 32, 3), 10, dropout=0.3)
    r = models.recipe("wide_resnet_16_8")            # Recipe (data)
    opt = r.optimizer(steps_per_epoch=351)           # fresh keras SGD, schedule in steps

Every model is an uncompiled ``keras.Model`` that accepts any ``(H, W, C)`` input
and class count and outputs class probabilities (softmax computed in float32;
pass ``output_activation=None`` for logits). Weight decay is an ``l2(wd/2)``
kernel regulariser taken from the model's recipe unless ``weight_decay=`` is
given (see ``recipe.py``). Importing this package does not import TensorFlow;
``build`` does.
"""

from __future__ import annotations

import importlib
import inspect
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from taylorglo_tf import extras
from taylorglo_tf.models.recipe import Recipe

__all__ = ["Recipe", "build", "names", "recipe"]

_MOMENTUM: dict[str, Any] = {"momentum": 0.9, "batch_size": 128}
_CIFAR_AUG = {"flip": True, "crop_padding": 2}  # paper, Appendix A: flips + 2-pixel crops
# Dropout 0.3 between the block's convs on CIFAR: Zagoruyko & Komodakis's dropout
# variant, and what the TaylorGLO authors trained ("wrn ... --drop 0.3" in their
# TrainingConfig.swift; 0.4 on SVHN, below).
_WRN: dict[str, Any] = {
    "lr": 0.1,
    "nesterov": True,
    "weight_decay": 5e-4,
    "epochs": 200,
    "milestones": (60, 120, 160),
    "gamma": 0.2,
    "model_options": {"dropout": 0.3},
    "augmentation": _CIFAR_AUG,
    "source": "Zagoruyko & Komodakis 2016 (dropout 0.3, as the TaylorGLO authors' code)",
    **_MOMENTUM,
}

# name -> (module, builder factory or function name, factory args, recipe)
_ZOO: dict[str, tuple[str, str, tuple, Recipe]] = {
    "tiny": (
        "cnn",
        "tiny",
        (),
        Recipe(
            "tiny",
            lr=0.05,
            momentum=0.9,
            batch_size=32,
            steps=300,
            source="this project: small CNN for tests and the embedded digits default",
        ),
    ),
    "basic_cnn": (
        "cnn",
        "basic_cnn",
        (),
        Recipe("basic_cnn", lr=0.01, batch_size=100, steps=20_000, source="Gonzalez & Miikkulainen 2020 (GLO), MNIST"),
    ),
    "alexnet": (
        "cnn",
        "alexnet",
        (),
        Recipe(
            "alexnet",
            lr=0.1,
            weight_decay=5e-4,
            epochs=164,
            milestones=(81, 122),
            augmentation=_CIFAR_AUG,
            source="Krizhevsky et al. 2012, CIFAR variant",
            **_MOMENTUM,
        ),
    ),
    "allcnn_c": (
        "allcnn",
        "allcnn_c",
        (),
        Recipe(
            "allcnn_c",
            lr=0.01,
            weight_decay=1e-3,
            epochs=350,
            milestones=(200, 250, 300),
            augmentation=_CIFAR_AUG,
            source="Springenberg et al. 2015",
            **_MOMENTUM,
        ),
    ),
    "preact_resnet20": (
        "resnet",
        "preact_resnet20",
        (),
        Recipe(
            "preact_resnet20",
            lr=0.1,
            weight_decay=1e-4,
            epochs=200,
            milestones=(100, 150),
            augmentation=_CIFAR_AUG,
            source="He et al. 2016",
            **_MOMENTUM,
        ),
    ),
    "wide_resnet_16_8": ("resnet", "wide_resnet", (16, 8), Recipe("wide_resnet_16_8", **_WRN)),
    "wide_resnet_28_5": ("resnet", "wide_resnet", (28, 5), Recipe("wide_resnet_28_5", **_WRN)),
    "wide_resnet_28_10": ("resnet", "wide_resnet", (28, 10), Recipe("wide_resnet_28_10", **_WRN)),
    "pyramidnet_110_48": (
        "pyramidnet",
        "pyramidnet",
        (110, 48),
        Recipe(
            "pyramidnet_110_48",
            lr=0.1,
            weight_decay=1e-4,
            epochs=300,
            milestones=(150, 225),
            augmentation=_CIFAR_AUG,
            source="Han et al. 2017",
            **_MOMENTUM,
        ),
    ),
}

# Dataset-specific recipes: (model name prefix, TFDS dataset name) -> changes.
# WRN on SVHN: 160 epochs, lr 0.01 x0.1 at 80 and 120, dropout 0.4, no flips/crops.
_DATASET_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("wide_resnet_", "svhn_cropped"): {
        "lr": 0.01,
        "epochs": 160,
        "milestones": (80, 120),
        "gamma": 0.1,
        "model_options": {"dropout": 0.4},
        "augmentation": {},
        "source": "Zagoruyko & Komodakis 2016, SVHN",
    },
}


def names() -> list[str]:
    """Names of all models in the zoo, sorted."""
    return sorted(_ZOO)


def _entry(name: str):
    if not isinstance(name, str) or name not in _ZOO:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(names())}")
    return _ZOO[name]


def recipe(name: str, dataset: str | None = None) -> Recipe:
    """The training recipe of model ``name`` (REFERENCE section 4).

    ``dataset`` (a TFDS name or ``tfds:`` URI) selects a dataset-specific variant
    where the literature has one (Wide ResNets on ``svhn_cropped``).
    """
    base = _entry(name)[3]
    ds = (dataset or "").removeprefix("tfds:")
    for (prefix, ds_name), changes in _DATASET_RECIPES.items():
        if name.startswith(prefix) and ds == ds_name:
            return Recipe(
                **{**base.to_dict(), **changes, "milestones": tuple(changes.get("milestones", base.milestones))}
            )
    return base


def _builder(name: str) -> Callable[..., Any]:
    module, attr, args, _ = _entry(name)
    fn = getattr(importlib.import_module(f"taylorglo_tf.models.{module}"), attr)
    return fn(*args) if args else fn


def build(name: str, input_shape: Sequence[int], num_classes: int, **options: Any):
    """Build model ``name`` of the zoo for ``input_shape`` and ``num_classes``.

    The model is an uncompiled ``keras.Model`` that outputs class probabilities
    (the softmax computed in float32), or logits with ``output_activation=None``.
    Its weight decay is an ``l2(weight_decay / 2)`` kernel regulariser, so that
    SGD on the regularised loss matches PyTorch-style weight decay.

    Args:
        name: a model of ``names()`` (``"tiny"``, ``"basic_cnn"``, ``"alexnet"``,
            ``"allcnn_c"``, ``"preact_resnet20"``, the Wide ResNets, ``"pyramidnet_110_48"``).
        input_shape: the image shape ``(H, W, C)``, or ``(H, W)`` for one channel.
        num_classes: the number of classes, >= 2.
        **options: per model; every model takes ``weight_decay`` (a number >= 0;
            defaults to the model's recipe's) and ``output_activation``
            (defaults to ``"softmax"``), ``basic_cnn`` and the Wide ResNets
            ``dropout`` too.

    Returns:
        The ``keras.Model``, built (its weights exist) and uncompiled.

    Raises:
        ValueError: for an unknown name (the message lists the valid ones), an
            option the model does not take (listing those it takes), a negative
            or non-numeric ``weight_decay``, an ``input_shape`` that is not
            ``(H, W[, C])`` of positive sizes, or fewer than 2 classes.

    Example:

    >>> from taylorglo_tf import models
    >>> model = models.build("tiny", (8, 8, 1), 10)
    >>> model.name, model.input_shape, model.output_shape
    ('tiny', (None, 8, 8, 1), (None, 10))
    >>> models.build("tiny", (8, 8), 10, output_activation=None).output_shape  # logits; one channel
    (None, 10)
    >>> models.build("tiny", (8, 8, 1), 10, dropout=0.5)
    Traceback (most recent call last):
        ...
    ValueError: model 'tiny' has no option(s) ['dropout']; valid options: ['weight_decay', 'output_activation']
    """
    with extras.needs("taylorglo_tf.models.build"):
        from taylorglo_tf.models.layers import check_shape

        fn = _builder(name)
    shape = check_shape(input_shape, num_classes)
    valid = [p for p in inspect.signature(fn).parameters if p not in ("input_shape", "num_classes")]
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(f"model {name!r} has no option(s) {bad}; valid options: {valid}")
    options.setdefault("weight_decay", _entry(name)[3].weight_decay)
    wd = options["weight_decay"]
    if isinstance(wd, bool) or not isinstance(wd, numbers.Real) or not float(wd) >= 0:  # NaN too
        raise ValueError(f"weight_decay must be a number >= 0, got {wd!r}")
    return fn(shape, int(num_classes), **options)
