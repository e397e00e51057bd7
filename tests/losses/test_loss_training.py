"""Training with Taylor approximations of cross-entropy (paper Appendix F, Table 2) on sklearn digits.

Setting: a 64-128-10 MLP, SGD with momentum 0.9, learning rate 0.01 and weight
decay 1e-3 (as ``l2(5e-4)``), the AllCNN-C recipe values of Table 2's study;
batch 32, 1,400 training / 397 test images. The approximations are centred at
(0.5, 0.5) with ``f(x, y) = x log y``, i.e. they approximate cross-entropy / n
(``scale=1``) or, with ``scale=n``, cross-entropy itself (``TaylorGLOLoss.from_loss``).

Measured test accuracy (seeds 0, 1, 2; 2-core CPU):

    loss                          10 epochs         30 epochs
    order 2, scale 1 (CE / n)     0.40-0.50         0.60-0.80
    order 3, scale 1 (CE / n)     0.49-0.71         0.89-0.91
    order 2, scale 10 (CE)        0.94-0.96         0.98
    order 3, scale 10 (CE)        0.96              0.98
    cross-entropy                 0.96-0.97         0.98

The paper's pattern (order 2 at chance, order 3 trains) is not reproduced here.
Order 2 is exactly mean squared error on the probabilities up to a constant
(tests/losses/test_losses.py), and it trains. At scale 1 it learns more slowly than order
3 (its gradients are smaller: in effect a smaller learning rate); at scale n both
orders reach cross-entropy's accuracy. The paper's chance-level order 2 on
AllCNN-C / CIFAR-10 (no batch normalisation, weight decay 1e-3) is then a property
of that model and recipe with a mean-squared-error loss, not of the expansion;
the paper does not state which scaling its study used.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from taylorglo_tf.losses import TaylorGLOLoss

ORDER3_ACCURACY = 0.85  # stated target for the order-3 approximation (scale 1, 30 epochs)
SCALED_ACCURACY = 0.90  # stated target for either order at scale n (10 epochs)


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], data.target[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def train_and_score(digits, loss, seed=0, epochs=30):
    x_train, y_train, x_test, y_test = digits
    keras.utils.set_random_seed(seed)
    decay = keras.regularizers.l2(5e-4)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(128, activation="relu", kernel_regularizer=decay),
            keras.layers.Dense(10, activation="softmax", kernel_regularizer=decay),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=loss, metrics=["accuracy"])
    model.fit(x_train, y_train, batch_size=32, epochs=epochs, verbose=0)
    return model.evaluate(x_test, y_test, verbose=0)[1]


def approximation(order, scale=1.0):
    return TaylorGLOLoss.from_loss("cross_entropy", order=order, scale=scale)


def test_order_3_trains_order_2_lags_at_scale_1_and_trains_at_scale_n(digits):
    order3 = train_and_score(digits, approximation(3))
    order2 = train_and_score(digits, approximation(2))
    assert order3 >= ORDER3_ACCURACY
    assert order2 <= order3 - 0.05
    # Not the paper's "order 2 does not train": approximating cross-entropy itself, it trains fast.
    assert train_and_score(digits, approximation(2, scale=10.0), epochs=10) >= SCALED_ACCURACY


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_the_pattern_holds_for_other_seeds_and_cross_entropy_is_best(digits, seed):
    order3 = train_and_score(digits, approximation(3), seed)
    order2 = train_and_score(digits, approximation(2), seed)
    cross_entropy = train_and_score(digits, keras.losses.SparseCategoricalCrossentropy(), seed)
    assert order3 >= ORDER3_ACCURACY
    assert order2 <= order3 - 0.05
    assert cross_entropy >= order3
    for order in (2, 3):
        assert train_and_score(digits, approximation(order, scale=10.0), seed, epochs=10) >= SCALED_ACCURACY
