"""The losses use only keras.ops: they give the reference values on the JAX backend too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from taylorglo_tf import taylor

pytest.importorskip("jax")

MNIST_THETA = list(taylor.PAPER_MNIST_THETA)

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, keras
    from taylorglo_tf.losses import BaikalLoss, TaylorGLOLoss
    assert keras.backend.backend() == "jax"
    data = json.loads(sys.stdin.read())
    labels, y_pred = np.array(data["labels"]), np.array(data["y_pred"], np.float32)
    loss = TaylorGLOLoss(data["theta"], reduction=None)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="sgd", loss=TaylorGLOLoss(data["theta"]), jit_compile=True)
    history = model.fit(np.ones((8, 4), np.float32), np.arange(8) % 3, epochs=2, verbose=0)
    print(json.dumps({
        "sparse": np.asarray(loss(labels, y_pred)).tolist(),
        "one_hot": np.asarray(loss(np.eye(3)[labels], y_pred)).tolist(),
        "logits": np.asarray(
            TaylorGLOLoss(data["theta"], from_logits=True, reduction=None)(labels, np.log(y_pred))
        ).tolist(),
        "baikal": np.asarray(BaikalLoss(reduction=None)(labels, y_pred)).tolist(),
        "fit_losses": history.history["loss"],
    }))
    """
)


def test_losses_give_reference_values_and_train_on_the_jax_backend():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=6)
    y_pred = rng.dirichlet(np.ones(3), size=6).astype(np.float32)
    payload = json.dumps({"labels": labels.tolist(), "y_pred": y_pred.tolist(), "theta": MNIST_THETA})
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], input=payload, capture_output=True, text=True, env=env, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    one_hot = np.eye(3)[labels]
    expected = taylor.reference_loss(MNIST_THETA, one_hot, y_pred)
    for key in ("sparse", "one_hot", "logits"):
        np.testing.assert_allclose(out[key], expected, rtol=1e-5)
    clipped = np.clip(y_pred, 1e-7, 1.0)
    np.testing.assert_allclose(out["baikal"], -np.mean(np.log(clipped) - one_hot / clipped, axis=-1), rtol=1e-5)
    assert len(out["fit_losses"]) == 2 and np.all(np.isfinite(out["fit_losses"]))
