"""How much of a loss is a learning rate: its gradient scale relative to cross-entropy.

For plain SGD, training with ``s * L`` is training with ``L`` at ``s`` times the
learning rate, so a found loss can win by its scale alone. The diagnostic:

    ratio = mean_i ||dL/dz_i|| / mean_i ||dCE/dz_i||

where ``z_i`` are the logits of example ``i`` of a validation batch (the first
``examples`` validation images), the model is at its initial weights (seeded by
``task.seed``), each loss sees ``softmax(z)`` (what the evaluator trains on) and
``CE`` is Keras's categorical cross-entropy. 1 means cross-entropy's scale, 10 a
loss whose gradients at the start of training are ten times larger (like a ten
times larger learning rate). It says nothing about the loss's shape: two losses
with ratio 1 can still train very differently.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import keras
import tensorflow as tf

from taylorglo_tf.training.task import Task

DEFAULT_EXAMPLES = 256
DEFINITION = (
    "mean over a validation batch of the per-example gradient norm |dL/dlogits| of the loss, divided by "
    "the same for cross-entropy, with the model at its initial weights"
)


@dataclasses.dataclass(frozen=True)
class LossScale:
    """The loss's gradient scale relative to cross-entropy (``ratio``) and its two parts.

    The norms are of ``B * dL/dz_i`` for a batch of ``B``: per-example gradients
    for a loss averaged over the batch (Keras's default reduction).
    """

    ratio: float
    loss_gradient_norm: float
    cross_entropy_gradient_norm: float
    examples: int
    seed: int
    definition: str = DEFINITION

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form; a non-finite ratio (a loss with NaN gradients) becomes ``None``."""
        return {
            key: (value if not isinstance(value, float) or math.isfinite(value) else None)
            for key, value in dataclasses.asdict(self).items()
        }


def loss_scale(loss: Any, task: Task, *, examples: int = DEFAULT_EXAMPLES) -> LossScale:
    """Measure ``loss``'s gradient scale relative to cross-entropy on ``task`` (see the module docstring)."""
    from taylorglo_tf import data, models

    if not isinstance(loss, keras.losses.Loss):
        raise TypeError(f"loss must be a keras.losses.Loss, got {type(loss).__name__}")
    if not isinstance(task, Task):
        raise TypeError(f"task must be a training.Task, got {type(task).__name__}")
    if isinstance(examples, bool) or not isinstance(examples, int) or examples < 1:
        raise ValueError(f"examples must be an integer >= 1, got {examples!r}")
    recipe = models.recipe(task.model, task.dataset)
    splits = data.load(task.dataset, data_dir=task.data_dir, fraction=task.fraction, seed=task.seed)
    images, labels = splits.x_val[:examples], splits.y_val[:examples]
    keras.utils.set_random_seed(task.seed)
    model = models.build(
        task.model, splits.input_shape, splits.num_classes, output_activation=None, **dict(recipe.model_options)
    )
    logits = tf.cast(model(images, training=False), tf.float32)
    loss_norm = _mean_gradient_norm(loss, logits, labels, splits.num_classes)
    reference_norm = _mean_gradient_norm(keras.losses.CategoricalCrossentropy(), logits, labels, splits.num_classes)
    return LossScale(
        ratio=loss_norm / reference_norm,
        loss_gradient_norm=loss_norm,
        cross_entropy_gradient_norm=reference_norm,
        examples=int(labels.shape[0]),
        seed=task.seed,
    )


def _mean_gradient_norm(loss: Any, logits: tf.Tensor, labels: Any, num_classes: int) -> float:
    # Labels as the evaluator gives them: one-hot, except for Keras's sparse loss.
    sparse = isinstance(loss, keras.losses.SparseCategoricalCrossentropy)
    targets = tf.constant(labels) if sparse else tf.one_hot(tf.cast(labels, tf.int32), num_classes)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        value = tf.cast(loss(targets, tf.nn.softmax(logits)), tf.float32)
    gradients = tape.gradient(value, logits) * tf.cast(tf.shape(logits)[0], tf.float32)
    return float(tf.reduce_mean(tf.norm(gradients, axis=-1)))
