"""What one task's evaluations share (a *session*): the data as tensors, the model copies, initial weights.

A trainer evaluates thousands of candidates, mostly of one task, so the
``Evaluator`` keeps a :class:`Session` per task: the splits as tensors (converted
once), K model copies with their optimizers and compiled steps (a
``training.population.Population``, built once and re-initialised by assigning
a seed's initial variable values), and the initial values per seed.
"""

from __future__ import annotations

import collections
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from taylorglo_tf.data.augmentation import Augmentation
from taylorglo_tf.models.recipe import Recipe
from taylorglo_tf.training import sources, user_data
from taylorglo_tf.training.population import Population, PopulationLoss
from taylorglo_tf.training.task import Task

# Inference batch of the validation/test passes: per-image CPU time is flat from
# 100 to 5,000 on basic_cnn (benchmarks/evaluation.py), and 512 bounds the memory.
EVAL_BATCH = 512
# Initial weights kept per session: the task's seed and its retry seeds; more
# seeds (comparisons run one per seed) rebuild a throwaway model instead.
KEPT_INITIAL_STATES = 4


def key(task: Task) -> tuple:
    """What makes two tasks one session (not ``steps``, the abort rule or ``lr_scale``: those change per call).

    A ``script:`` model's registration version is part of it: registering the name
    again (new data or builder) opens a new session.
    """
    return (
        sources.version(task.model),
        json.dumps(task.recipe, sort_keys=True, default=list),
        task.dataset,
        task.data_dir,
        task.fraction,
        task.seed if task.fraction < 1.0 else None,  # the subset depends on the seed
        task.model,
        task.batch_size,
        json.dumps(task.augmentation, sort_keys=True),
    )


def labels_for(num_classes: int, loss: Any) -> Callable:
    """Sparse integer labels -> what ``loss`` takes: one-hot floats, except for the sparse-only Keras loss."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return lambda y: y
    return lambda y: tf.one_hot(tf.cast(y, tf.int32), num_classes)


@dataclass(frozen=True)
class Schedule:
    """How far an evaluation trains and where the abort rule looks (steps count from 1)."""

    total: int  # optimizer steps to train
    full_length: int  # steps of the whole recipe: a time-varying loss's t runs over these
    check_step: int  # the step after which the abort rule scores the validation split

    def progress_at(self, step: int) -> float:
        """``t`` at ``step``: partial training is exactly the first steps of the full run."""
        return min(1.0, (step - 1) / self.full_length)

    def reports_at(self, step: int, every: int) -> bool:
        """Whether ``step`` checks for divergence and calls ``progress`` (every ``every`` steps and the last)."""
        return step % every == 0 or step == self.total


@dataclass
class Session:
    """What one task's evaluations share."""

    model_name: str
    input_shape: tuple[int, ...]
    num_classes: int
    # split name -> (inputs, labels) tensors, converted once
    tensors: dict[str, tuple[tf.Tensor, tf.Tensor]]
    # the schedule's length and milestones (a script: model's length is Task.steps: recipe None)
    recipe: Recipe | None
    batch_size: int
    steps_per_epoch: int
    augmentation: Augmentation
    jit_compile: bool
    # multiple of the recipe's learning rate, read by the optimizers at every step (Task.lr_scale)
    lr_scale: tf.Variable
    # seed -> initial variable values, least recently used first
    initial_states: collections.OrderedDict[int, list[np.ndarray]] = field(default_factory=collections.OrderedDict)
    # the model copies (the largest K asked for so far)
    population: Population | None = None
    # the model source: a zero-argument builder and optimizer factory (see training.sources)
    builder: Callable[[], keras.Model] | None = None
    optimizer_factory: Callable[[], Any] | None = None
    # most copies the source can give (1: a model that cannot be cloned); None: any number
    max_copies: int | None = None
    # initial values for every seed where the model cannot be rebuilt
    fixed_initial: list[np.ndarray] | None = None

    @classmethod
    def open(cls, task: Task, jit_compile: bool) -> Session:
        """Loads ``task``'s data and model source (a ValueError names a bad dataset, model or builder;
        ``sources.UnknownSource`` a ``script:`` model this process has not registered)."""
        if sources.kind(task.model) == "script":
            return cls._open_script(task, jit_compile)
        from taylorglo_tf import data

        python = sources.kind(task.model) == "python"
        recipe = sources.recipe(task)
        if python:
            user_builder = sources.import_builder(task.model)
        splits = data.load(task.dataset, data_dir=task.data_dir, fraction=task.fraction, seed=task.seed)
        batch_size = task.batch_size or recipe.batch_size
        n_train = len(splits.y_train)
        if n_train < batch_size:
            raise ValueError(
                f"task batch_size {batch_size} exceeds the {n_train} training examples of {task.dataset!r}"
            )
        augmentation_options = recipe.augmentation if task.augmentation is None else task.augmentation
        session = cls(
            model_name=task.model,
            input_shape=splits.input_shape,
            num_classes=splits.num_classes,
            tensors={
                split: data.as_tensors(getattr(splits, f"x_{split}"), getattr(splits, f"y_{split}"))
                for split in ("train", "val", "test")
            },
            recipe=recipe,
            batch_size=batch_size,
            steps_per_epoch=recipe.steps_per_epoch(n_train, batch_size),
            augmentation=data.Augmentation.from_dict(dict(augmentation_options)),
            jit_compile=jit_compile,
            lr_scale=tf.Variable(task.lr_scale, dtype=tf.float32, trainable=False),
        )
        if python:
            session.builder = user_data.python_builder(task.model, user_builder, splits)
            weight_decay = recipe.weight_decay

            def python_optimizer() -> Any:
                optimizer = recipe.optimizer(session.steps_per_epoch, lr_scale=session.lr_scale)
                if weight_decay:  # decoupled: the builder is the user's, no regulariser of ours in it
                    optimizer.weight_decay = weight_decay
                return optimizer

            session.optimizer_factory = python_optimizer
        return session

    @classmethod
    def _open_script(cls, task: Task, jit_compile: bool) -> Session:
        """A registered ``script:`` source: its arrays, builder and optimizer factory; no augmentation."""
        from taylorglo_tf.data.splits import subsample

        registration = sources.lookup(task.model)
        batch_size = task.batch_size or sources.DEFAULT_BATCH_SIZE
        x_train, y_train = registration.splits["train"]
        x_train, y_train = subsample(x_train, y_train, task.fraction, task.seed)
        if len(y_train) < batch_size:
            raise ValueError(
                f"task batch_size {batch_size} exceeds the {len(y_train)} training examples of {task.model!r}"
            )
        arrays = {"train": (x_train, y_train), **{k: v for k, v in registration.splits.items() if k != "train"}}
        lr_scale = tf.Variable(task.lr_scale, dtype=tf.float32, trainable=False)
        return cls(
            model_name=task.model,
            input_shape=registration.input_shape,
            num_classes=registration.num_classes,
            tensors={split: (tf.constant(x), tf.constant(y)) for split, (x, y) in arrays.items()},
            recipe=None,
            batch_size=batch_size,
            steps_per_epoch=Recipe.steps_per_epoch(len(y_train), batch_size),
            augmentation=Augmentation(),
            jit_compile=jit_compile,
            lr_scale=lr_scale,
            builder=registration.build_model,
            optimizer_factory=lambda: user_data.scaled_optimizer(registration.optimizer, lr_scale, task.model),
            max_copies=registration.max_copies,
            fixed_initial=registration.fixed_initial,
        )

    def schedule(self, task: Task) -> Schedule:
        """``task``'s schedule on this data: ``task.steps`` (0: the whole recipe), the abort check's step."""
        full_length = task.steps if self.recipe is None else self.recipe.total_steps(self.steps_per_epoch)
        return Schedule(
            total=task.steps or full_length,
            full_length=full_length,
            check_step=math.ceil(task.abort_check_epoch * self.steps_per_epoch),
        )

    def build_model(self) -> keras.Model:
        if self.builder is not None:
            return self.builder()
        from taylorglo_tf import models

        assert self.recipe is not None  # the zoo's

        return models.build(
            self.model_name,
            input_shape=self.input_shape,
            num_classes=self.num_classes,
            **dict(self.recipe.model_options),
        )

    def copies(self, size: int) -> Population:
        """The model copies, at least ``size`` of them (a larger batch replaces a smaller one)."""
        if self.population is None or self.population.size < size:
            self.population = Population.build(size, self.build_model, self.build_optimizer, self.jit_compile)
        return self.population

    def build_optimizer(self) -> Any:
        """A fresh optimizer of the source, reading ``lr_scale`` at every step."""
        if self.optimizer_factory is not None:
            return self.optimizer_factory()
        assert self.recipe is not None  # the zoo's
        return self.recipe.optimizer(self.steps_per_epoch, lr_scale=self.lr_scale)

    def steps_for(self, losses: Sequence[Any], batch_loss: Callable) -> PopulationLoss:
        """The compiled steps for ``losses`` (one form), in copies 0..len(losses)-1."""
        return self.copies(len(losses)).loss(losses, lambda loss: labels_for(self.num_classes, loss), batch_loss)

    def initial_state(self, seed: int) -> list[np.ndarray]:
        """The model's initial variable values for ``seed`` (kept, LRU-bounded)."""
        states = self.initial_states
        if self.fixed_initial is not None:
            return self.fixed_initial  # one instance that cannot be rebuilt: its own weights for every seed
        if seed in states:
            states.move_to_end(seed)
        else:
            # A throwaway model gives the seed's initialisation; the copies (and their compiled steps) stay.
            keras.utils.set_random_seed(seed)
            states[seed] = [v.numpy() for v in self.build_model().variables]
            while len(states) > KEPT_INITIAL_STATES:
                states.popitem(last=False)
        return states[seed]

    def train_batches(self, seed: int):
        """The training stream for one attempt, rebuilt so that the order depends only on ``seed``."""
        from taylorglo_tf import data

        # Ops seeded from the global seed (and tf.data's seed derivation) must not depend on what ran before.
        keras.utils.set_random_seed(seed)
        images, labels = self.tensors["train"]
        return iter(
            data.pipeline(
                images, labels, batch_size=self.batch_size, training=True, augment=self.augmentation, seed=seed
            ).repeat()
        )

    def score(self, compiled: PopulationLoss, split: str, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per copy of ``active``, (accuracy, mean loss) on ``split``; copies not ``active`` score 0."""
        if split not in self.tensors:  # a registered model's test split is optional
            raise ValueError(f"{self.model_name!r} has no {split} split; register it with {split}=(x, y)")
        return compiled.score(*self.tensors[split], active, EVAL_BATCH)
