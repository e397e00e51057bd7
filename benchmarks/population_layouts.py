"""Two layouts for K candidates in one train step, on ``basic_cnn`` (MNIST shape, batch 100).

    python benchmarks/population_layouts.py [--k 4] [--steps 6] [--rounds 2]

- ``alone``: one model per step (K steps for K candidates);
- ``side by side``: K copies of the zoo model in one ``tf.function`` (what
  ``taylorglo_tf.training.population`` does);
- ``vectorized``: one model with a candidate axis: the first convolution shared
  (K x 32 filters over the same images), the second per candidate (TensorFlow
  has no CPU gradient for grouped convolutions), the dense layers as batched
  matmuls over stacked weights.

Reports wall and process-CPU milliseconds per candidate-step, the layouts taking
turns round by round. Plain SGD and cross-entropy: the layout is what is compared.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

BATCH = 100


def alone_or_side_by_side(k: int):
    import keras
    import tensorflow as tf

    from taylorglo_tf import models

    copies = []
    for _ in range(k):
        model = models.build("basic_cnn", (28, 28, 1), 10)
        optimizer = keras.optimizers.SGD(0.01)
        optimizer.build(model.trainable_variables)
        copies.append((model, optimizer))
    loss_fn = keras.losses.CategoricalCrossentropy()

    @tf.function
    def step(x, y):
        losses = []
        for model, optimizer in copies:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            optimizer.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
            losses.append(loss)
        return tf.stack(losses)

    return step


def vectorized(k: int):
    import tensorflow as tf

    def weights(*shape, scale):
        return tf.Variable(tf.random.normal(shape, stddev=scale))

    w1, b1 = weights(5, 5, 1, k * 32, scale=0.1), tf.Variable(tf.zeros(k * 32))
    w2, b2 = weights(5, 5, 32, k * 64, scale=0.05), tf.Variable(tf.zeros(k * 64))
    w3, b3 = weights(k, 7 * 7 * 64, 1024, scale=0.02), tf.Variable(tf.zeros((k, 1, 1024)))
    w4, b4 = weights(k, 1024, 10, scale=0.05), tf.Variable(tf.zeros((k, 1, 10)))
    variables = [w1, b1, w2, b2, w3, b3, w4, b4]

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            h = tf.nn.max_pool2d(tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME") + b1), 2, 2, "SAME")
            h = tf.concat(
                [tf.nn.conv2d(a, b, 1, "SAME") for a, b in zip(tf.split(h, k, axis=-1), tf.split(w2, k, axis=-1))], -1
            )
            h = tf.nn.max_pool2d(tf.nn.relu(h + b2), 2, 2, "SAME")  # (B, 7, 7, K*64)
            h = tf.reshape(tf.transpose(tf.reshape(h, (BATCH, 7, 7, k, 64)), (3, 0, 1, 2, 4)), (k, BATCH, -1))
            logits = tf.matmul(tf.nn.relu(tf.matmul(h, w3) + b3), w4) + b4
            losses = tf.reduce_mean(
                tf.nn.softmax_cross_entropy_with_logits(tf.broadcast_to(y, tf.shape(logits)), logits), axis=-1
            )
            total = tf.reduce_sum(losses)
        for variable, gradient in zip(variables, tape.gradient(total, variables)):
            variable.assign_sub(0.01 * gradient)
        return losses

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=4, help="candidates per step (default: 4)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per layout and round (default: 6)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, layouts taking turns (default: 2)")
    args = parser.parse_args()
    import tensorflow as tf

    x = tf.random.uniform((BATCH, 28, 28, 1))
    y = tf.one_hot(tf.random.uniform((BATCH,), 0, 10, tf.int32), 10)
    layouts = {
        "alone": (alone_or_side_by_side(1), 1),
        "side by side": (alone_or_side_by_side(args.k), args.k),
        "vectorized": (vectorized(args.k), args.k),
    }
    for step, _ in layouts.values():
        step(x, y).numpy()  # trace and warm up
    totals = {name: [0.0, 0.0] for name in layouts}
    for _ in range(args.rounds):
        for name, (step, k) in layouts.items():
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                result = step(x, y)
            result.numpy()
            totals[name][0] += (time.perf_counter() - wall) / (args.steps * k) / args.rounds
            totals[name][1] += (time.process_time() - cpu) / (args.steps * k) / args.rounds
    print(f"K = {args.k}, basic_cnn, batch {BATCH}: ms per candidate-step")
    print("| layout | wall ms | CPU ms | CPU vs alone |\n|---|---|---|---|")
    for name, (wall, cpu) in totals.items():
        print(f"| {name} | {wall * 1e3:.1f} | {cpu * 1e3:.1f} | {cpu / totals['alone'][1]:.2f} |")


if __name__ == "__main__":
    main()
