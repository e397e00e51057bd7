"""Population-batched training: K candidates of one task in one compiled train step.

A ``Population`` holds K copies of a session's model (each with its own weights,
optimizer state and loss, so its own theta) side by side in one graph. One step
feeds the same batch to every copy; each copy's forward pass, gradient and update
are independent ops, so TensorFlow runs them in parallel and pays one call's
overhead for all K. A step runs the first ``width`` copies only (the
copies its ``active`` argument covers, rounded up to a power of two so that a
step is traced at most log2(K) + 1 times), so a batch of fewer candidates than
copies, or one whose last candidates have stopped, pays for about the copies it
uses. Within the width,
``active`` (a tensor, so no retracing) decides whether a copy trains: all of a
slot's work (forward, backward, update) is one ``tf.cond`` branch, so a
candidate that diverged, was stopped early or waits for another attempt keeps
its weights and its other variables and costs nothing, wherever it sits in the
batch (``benchmarks/early_stopping.py --narrowing``: half of 14 copies stopped,
every other one, made a step 0.60x as costly; with the passes outside the cond
it was 0.95x). Every slot runs the same branch at any width, so each
candidate's arithmetic is the same beside any others as alone (K = 1 is
``Evaluator.evaluate``); inside a ``tf.cond`` TensorFlow's graph rewrites round
the Taylor loss's gradient differently from a plain step (1e-8 after one step),
which no path here takes.

Why side by side and not one vectorized model (weights stacked on a candidate
axis, grouped convolutions, batched matmuls): measured on CPU with
``benchmarks/population_layouts.py``, the vectorized ``basic_cnn`` cost more CPU
time per candidate than K copies, TensorFlow has no CPU gradient for grouped
convolutions, and copies reproduce each candidate exactly, dropout masks
included (each copy's dropout seed state is one of its variables, reset to the
seed's initial state like its weights).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def loss_signature(loss: Any) -> tuple[str, str, bool]:
    """(class, config without theta, theta-settable): losses with one signature share compiled steps."""
    config = dict(loss.get_config())
    settable = hasattr(loss, "set_theta") and hasattr(loss, "theta")
    if settable:
        config.pop("theta", None)
    config.pop("name", None)
    cls = type(loss)
    return f"{cls.__module__}.{cls.__qualname__}", json.dumps(config, sort_keys=True, default=str), settable


@dataclass
class PopulationLoss:
    """The K loss copies of one loss form and the steps compiled over them.

    Both steps take ``active``, one boolean per copy from copy 0: the step runs the
    copies up to the last one it covers (the train step: the last one marked),
    rounded up to a power of two.
    """

    losses: list[Any]
    settable: bool
    train_fn: Any
    eval_fn: Any

    def train_step(self, x, y, active: np.ndarray):
        """One optimizer step of the copies ``active`` marks; their training losses (copies after
        the last marked one do not run, so their rows are left out)."""
        running = active[: np.flatnonzero(active)[-1] + 1]
        return self.train_fn(x, y, *self._widened(running))[: len(running)]

    def eval_step(self, x, y, active: np.ndarray):
        """Per copy of ``active``, (correct predictions, loss x batch size) of one batch; zeros where not active."""
        return self.eval_fn(x, y, *self._widened(active))[: len(active)]

    def score(self, images: tf.Tensor, labels: tf.Tensor, active: np.ndarray, batch: int):
        """Per copy of ``active``, (accuracy, mean loss) on ``images`` (not empty) in slices of ``batch``;
        copies not ``active`` score 0. The sums stay tensors, read once at the end."""
        count = int(labels.shape[0])
        sums = tf.zeros((len(active), 2))
        for start in range(0, count, batch):
            sums += self.eval_step(images[start : start + batch], labels[start : start + batch], active)
        sums = sums.numpy().astype(np.float64) / count
        return sums[:, 0], sums[:, 1]

    def _widened(self, active: np.ndarray) -> tuple[tf.Tensor, int]:
        """The mask padded to the step's width: the next power of two, at most every copy.

        Each width is a trace (with XLA a compilation), so widths are powers of two:
        at most log2(K) + 1 of them however candidates stop; the padding copies are inactive.
        """
        width = min(1 << (len(active) - 1).bit_length(), len(self.losses))
        padded = np.zeros(width, dtype=bool)
        padded[: len(active)] = active
        return tf.constant(padded), width

    def traces(self) -> int:
        return sum(fn.experimental_get_tracing_count() for fn in (self.train_fn, self.eval_fn))


@dataclass
class Population:
    """K model copies of one session with their optimizers and divergence flags."""

    models: list[keras.Model]
    optimizers: list[keras.optimizers.Optimizer]
    optimizer_initial: list[list[np.ndarray]]
    finite: list[tf.Variable]
    jit_compile: bool
    losses: dict[tuple, PopulationLoss] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        size: int,
        build_model: Callable[[], keras.Model],
        build_optimizer: Callable[[], keras.optimizers.Optimizer],
        jit_compile: bool,
    ) -> Population:
        """``size`` fresh copies (their values are set by :meth:`reset`), each with its own optimizer."""
        models = [build_model() for _ in range(size)]
        optimizers = [build_optimizer() for _ in models]
        if len({id(optimizer) for optimizer in optimizers}) < len(optimizers):
            raise ValueError(
                f"the optimizer factory returned the same instance twice ({optimizers[0]!r:.80}); "
                "each model copy needs its own, or optimizer state would leak between candidates"
            )
        for model, optimizer in zip(models, optimizers):
            optimizer.build(model.trainable_variables)
        return cls(
            models=models,
            optimizers=optimizers,
            optimizer_initial=[[v.numpy() for v in optimizer.variables] for optimizer in optimizers],
            finite=[tf.Variable(True, trainable=False) for _ in models],
            jit_compile=jit_compile,
        )

    @property
    def size(self) -> int:
        return len(self.models)

    def loss(self, group: Sequence[Any], labels_for: Callable, batch_loss: Callable) -> PopulationLoss:
        """The steps for the form of the losses ``group`` (one signature), copy k's loss set to ``group[k]``'s
        theta. Compiled on the form's first use, over copies of the loss (the steps must not depend on the
        caller's objects; a new theta needs no retracing); ``labels_for(loss)`` encodes labels for ``loss``."""
        signature = loss_signature(group[0])
        compiled = self.losses.get(signature)
        if compiled is None:
            held = [type(group[0]).from_config(group[0].get_config()) for _ in range(self.size)]
            compiled = self.compile_loss(held, signature[2], labels_for(held[0]), batch_loss)
            self.losses[signature] = compiled
        if compiled.settable:
            for slot_loss, loss in zip(compiled.losses, group):
                slot_loss.set_theta(loss.theta)
        return compiled

    def reset(self, slots: Sequence[int], initial: list[np.ndarray]) -> None:
        """The seed's initial variables (weights, dropout state) and a fresh optimizer in ``slots``."""
        for k in slots:
            for variable, value in zip(self.models[k].variables, initial):
                variable.assign(value)
            for variable, value in zip(self.optimizers[k].variables, self.optimizer_initial[k]):
                variable.assign(value)
            self.finite[k].assign(True)

    def finite_flags(self) -> np.ndarray:
        """Per slot: no NaN/inf in the training loss since the last reset."""
        return np.array([bool(flag.numpy()) for flag in self.finite])

    def weights_finite(self, k: int) -> bool:
        return all(bool(np.all(np.isfinite(v.numpy()))) for v in self.models[k].trainable_variables)

    def compile_loss(self, held: list[Any], settable: bool, labels: Callable, batch_loss: Callable) -> PopulationLoss:
        """Train and eval steps over the K loss copies ``held`` (one per slot)."""
        return PopulationLoss(
            losses=held,
            settable=settable,
            train_fn=self._make_train_step(held, labels, batch_loss),
            eval_fn=self._make_eval_step(held, labels),
        )

    def _make_train_step(self, loss_fns: list[Any], labels: Callable, batch_loss: Callable):
        models, optimizers, finite = self.models, self.optimizers, self.finite

        def slot_step(k: int, x, y, active):
            # All of a slot's work inside the cond: a copy that is not training costs nothing
            # (see the module docstring).
            model = models[k]

            def train():
                with tf.GradientTape() as tape:
                    predictions = model(x, training=True)
                    loss = tf.cast(batch_loss(loss_fns[k], labels, y, predictions), tf.float32)
                    total = loss
                    if model.losses:  # weight decay as kernel regularisers
                        total = total + tf.add_n([tf.cast(penalty, tf.float32) for penalty in model.losses])
                gradients = tape.gradient(total, model.trainable_variables)
                optimizers[k].apply(gradients, model.trainable_variables)
                finite[k].assign(tf.logical_and(finite[k], tf.math.is_finite(total)))
                return loss

            return tf.cond(active[k], train, lambda: tf.constant(0.0))

        @tf.function(jit_compile=self.jit_compile, reduce_retracing=True)
        def train_step(x, y, active, width: int):
            # One branch per slot; slots do not depend on each other, so they run concurrently.
            return tf.stack([slot_step(k, x, y, active) for k in range(width)])

        return train_step

    def _make_eval_step(self, loss_fns: list[Any], labels: Callable):
        models = self.models

        def slot_eval(k: int, x, y):
            predictions = models[k](x, training=False)
            rows_finite = tf.reduce_all(tf.math.is_finite(predictions), axis=-1)
            hits = tf.logical_and(tf.equal(tf.argmax(predictions, axis=-1), y), rows_finite)
            batch = tf.cast(tf.shape(y)[0], tf.float32)
            loss = tf.cast(loss_fns[k](labels(y), predictions), tf.float32)
            return tf.stack([tf.reduce_sum(tf.cast(hits, tf.float32)), loss * batch])

        @tf.function(jit_compile=self.jit_compile, reduce_retracing=True)
        def eval_step(x, y, active, width: int):
            y = tf.cast(y, tf.int64)
            sums = tf.stack([slot_eval(k, x, y) for k in range(width)])
            return tf.where(active[:, None], sums, tf.zeros_like(sums))

        return eval_step

    def trace_count(self) -> int:
        return sum(compiled.traces() for compiled in self.losses.values())
