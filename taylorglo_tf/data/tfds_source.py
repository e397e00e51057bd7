"""TensorFlow Datasets source with the paper's splits (REFERENCE section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from taylorglo_tf.data.splits import Splits, make_splits, standardise, to_unit


@dataclass(frozen=True)
class TfdsSplits:
    """TFDS split strings for train / validation / test, and the normalisation.

    ``normalisation``: ``"unit"`` (x / 255) or ``"standardise"`` (per-channel mean
    and std of the training split).
    """

    train: str
    val: str
    test: str
    normalisation: str = "standardise"


# Appendix A: validation carved from the end of the training split.
PAPER_SPLITS: Mapping[str, TfdsSplits] = {
    "mnist": TfdsSplits("train[:55000]", "train[55000:]", "test", "unit"),
    "cifar10": TfdsSplits("train[:45000]", "train[45000:]", "test"),
    "cifar100": TfdsSplits("train[:45000]", "train[45000:]", "test"),
    "svhn_cropped": TfdsSplits("train[:47225]", "train[47225:]", "test"),
}
NORMALISATIONS = ("unit", "standardise")


def resolve_splits(name: str, options: Mapping[str, str]) -> TfdsSplits:
    """The splits for ``tfds:name?train=..&val=..&test=..&norm=..``; the paper's by default.

    Datasets without paper splits must name all three.
    """
    allowed = {"train", "val", "test", "norm"}
    bad = sorted(set(options) - allowed)
    if bad:
        raise ValueError(f"tfds:{name}: unknown option(s) {bad}; valid: {sorted(allowed)}")
    base = PAPER_SPLITS.get(name)
    if base is None and not {"train", "val", "test"} <= set(options):
        raise ValueError(
            f"tfds:{name} has no built-in splits (known: {', '.join(sorted(PAPER_SPLITS))}); "
            f"name them, e.g. tfds:{name}?train=train[:90%]&val=train[90%:]&test=test"
        )
    norm = options.get("norm", base.normalisation if base else "standardise")
    if norm not in NORMALISATIONS:
        raise ValueError(f"tfds:{name}: unknown norm {norm!r}; valid: {list(NORMALISATIONS)}")
    splits = TfdsSplits(
        options.get("train", base.train if base else ""),
        options.get("val", base.val if base else ""),
        options.get("test", base.test if base else ""),
        norm,
    )
    import tensorflow_datasets as tfds

    for role in ("train", "val", "test"):
        spec = getattr(splits, role)
        try:
            tfds.core.ReadInstruction.from_spec(spec)
        except (ValueError, AssertionError) as e:
            raise ValueError(f"tfds:{name}: bad {role} split {spec!r}: {e}") from None
    return splits


_LOAD_BATCH = 8192  # TFDS batches before its per-element mapping: far less overhead


def _as_numpy(ds) -> tuple[np.ndarray, np.ndarray]:
    import tensorflow_datasets as tfds

    xs, ys = [], []
    for x, y in tfds.as_numpy(ds):
        xs.append(x)
        ys.append(y)
    if not xs:
        return np.zeros((0,), np.uint8), np.zeros((0,), np.int64)
    return np.concatenate(xs), np.concatenate(ys)


def load_tfds(name: str, options: Mapping[str, str], data_dir: str | None, download: bool) -> Splits:
    """Load ``name`` through ``tfds.load`` (downloading and preparing it if allowed)."""
    import tensorflow_datasets as tfds

    splits = resolve_splits(name, options)
    try:
        datasets, info = tfds.load(
            name,
            split=[splits.train, splits.val, splits.test],
            as_supervised=True,
            data_dir=data_dir,
            download=download,
            batch_size=_LOAD_BATCH,
            with_info=True,
        )
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"unknown TFDS dataset {name!r} (tfds:{name})") from None
    except (AssertionError, FileNotFoundError) as e:
        # tfds asserts when the data is not prepared and download=False
        raise FileNotFoundError(
            f"tfds:{name} is not available under data_dir={data_dir!r} and download is off: {e}"
        ) from e
    except ValueError as e:
        raise ValueError(f"tfds:{name}: bad split in {splits}: {e}") from e
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = (_as_numpy(d) for d in datasets)
    info_dict: dict = {"normalisation": splits.normalisation, "splits": [splits.train, splits.val, splits.test]}
    if splits.normalisation == "unit":
        x_tr, x_va, x_te = to_unit(x_tr, x_va, x_te)
    else:
        (x_tr, x_va, x_te), stats = standardise(x_tr, x_va, x_te)
        info_dict.update(stats)
    label = info.features["label"] if "label" in info.features else None  # noqa: SIM401 (FeaturesDict has no .get)
    num_classes = getattr(label, "num_classes", None)
    return make_splits(
        f"tfds:{name}", (x_tr, y_tr), (x_va, y_va), (x_te, y_te), num_classes=num_classes, info=info_dict
    )
