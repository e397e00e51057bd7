"""A user's script for ``taylorglo_tf.LossSearch`` tests: wine data, a small MLP, a tiny search.

Imported by the tests (:func:`wine_splits`, :func:`wine_mlp`, :func:`wine_search`) and run
as a script by the tests that need processes of their own (a search killed and run again,
copies of one script sharing a coordinator)::

    python -m tests.helpers.loss_search DIRECTORY [GENERATIONS] [STEPS]

which prints the experiment line, the progress, and ``candidates: N`` when done.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

OPTIMIZER_LR = 0.05


def wine_splits() -> tuple[tuple[Any, Any], tuple[Any, Any], tuple[Any, Any]]:
    """(train, validation, test) of scikit-learn's wine data (178 rows, 13 features, 3 classes), standardised."""
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    x = ((x - x.mean(axis=0)) / x.std(axis=0)).astype("float32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return (x[:100], y[:100]), (x[100:140], y[100:140]), (x[140:], y[140:])


def wine_mlp() -> Any:
    import keras

    return keras.Sequential(
        [keras.Input((13,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    )


def sgd() -> Any:
    import keras

    return keras.optimizers.SGD(OPTIMIZER_LR, momentum=0.9)


def wine_search(directory: Any, *, generations: int = 2, steps: int = 20, **kwargs: Any) -> Any:
    import taylorglo_tf

    kwargs.setdefault("candidates_per_step", 2)
    return taylorglo_tf.LossSearch(
        wine_mlp,
        optimizer=sgd,
        steps=steps,
        batch_size=16,
        population=4,
        generations=generations,
        directory=directory,
        **kwargs,
    )


def main(argv: list[str]) -> int:
    directory = argv[0]
    generations = int(argv[1]) if len(argv) > 1 else 2
    steps = int(argv[2]) if len(argv) > 2 else 20
    (x, y), validation, _ = wine_splits()
    search = wine_search(directory, generations=generations, steps=steps, name="wine")
    search.search(x, y, validation_data=validation)
    with open(f"{directory}/candidates.csv") as table:
        print(f"candidates: {sum(1 for _ in table) - 1}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
