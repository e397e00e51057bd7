"""``TaylorGLOLoss``: a loss given by a multivariate Taylor polynomial (paper eq. 3-5)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from taylorglo_tf import taylor
from taylorglo_tf.losses._common import PACKAGE, full_precision_dtype, one_hot_labels, probabilities


@keras.saving.register_keras_serializable(package=PACKAGE)
class TaylorGLOLoss(keras.losses.Loss):
    """TaylorGLO loss: a multivariate Taylor polynomial of the label and the prediction (paper eq. 3-5).

    Formula:

    ```python
    loss = -mean(f(x, y[, t]), axis=-1)   # per example; then reduced over the batch
    ```

    ``f`` is the trimmed Taylor expansion of :mod:`taylorglo_tf.taylor` with
    parameters ``theta`` (centres first, then coefficients). ``x`` is the one-hot
    label (sparse integer labels are accepted too), ``y`` the predicted probability
    (softmax of ``y_pred`` when ``from_logits``), ``t`` the training progress in
    [0, 1] set by :meth:`set_progress` (or the
    :class:`~taylorglo_tf.losses.TrainingProgress` callback). With the defaults
    (``order=3``, ``inputs=("x", "y")``, ``convention="paper"``) theta has 8
    entries and the loss is the paper's eq. 5::

        L = -(1/n) sum_i [ t2 (y-t1) + 1/2 t3 (y-t1)^2 + 1/6 t4 (y-t1)^3
                           + t5 (x-t0)(y-t1) + 1/2 t6 (x-t0)(y-t1)^2 + 1/2 t7 (x-t0)^2 (y-t1) ]

    Theta lives in a non-trainable float32 ``keras.Variable``: :meth:`set_theta`
    changes the loss of an already compiled train step without retracing (TensorFlow
    backend; on JAX a jitted step captures the value when traced). The loss never
    computes in half precision: half-precision dtypes and mixed policies map to float32.

    Args:
        theta: the parameters, ``taylor.expected_theta_length(order, inputs)``
            finite numbers (8 for the defaults): the centres of ``inputs``, then
            one coefficient per kept term.
        order: the order of the expansion, an integer in [1, ``taylor.MAX_ORDER``].
            Defaults to 3 (the paper's).
        inputs: the variables of ``f`` in order, from ``"x"`` (label), ``"y"``
            (prediction, required) and ``"t"`` (training progress). Defaults to
            ``("x", "y")``.
        from_logits: whether ``y_pred`` holds logits (a softmax turns them into
            probabilities). Defaults to ``False``: probabilities.
        convention: ``"paper"`` (coefficients are partial derivatives, divided by
            the factorials of their multi-index in the graph) or ``"folded"``
            (coefficients multiply their monomials as they are). Defaults to ``"paper"``.
        reduction: Keras's reduction over the batch (``"sum_over_batch_size"``,
            ``"sum"``, ``"mean"``, ``"mean_with_sample_weight"`` or ``None`` for
            one loss per example). Defaults to ``"sum_over_batch_size"``.
        name: the loss's name. Defaults to ``"taylorglo"``.
        dtype: the dtype or dtype policy of the computation; ``float16``,
            ``bfloat16`` and mixed policies compute in float32 (a polynomial loses
            too much in 16 bits). Defaults to ``None``: ``keras.backend.floatx()``.

    Raises:
        ValueError: for a theta of the wrong length, with non-finite entries or
            entries beyond float32's range; an order outside [1, ``taylor.MAX_ORDER``];
            inputs without ``"y"``, with an unknown or a repeated name; an unknown
            ``convention``.

    Example:

    With ``t2 = t5 = 1`` and every other parameter 0, ``f = y + x y``: each
    example's loss is ``-(1 + p_true) / n`` for ``n`` classes.

    >>> import numpy as np
    >>> from taylorglo_tf.losses import TaylorGLOLoss
    >>> loss = TaylorGLOLoss([0, 0, 1, 0, 0, 1, 0, 0])
    >>> y_true = np.array([[0, 1, 0], [0, 0, 1]])
    >>> y_pred = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])
    >>> round(float(loss(y_true, y_pred)), 4)  # mean of -(1 + 0.95) / 3 and -(1 + 0.1) / 3
    -0.5083
    >>> round(float(loss(np.array([1, 2]), y_pred)), 4)  # sparse labels
    -0.5083
    >>> per_example = TaylorGLOLoss([0, 0, 1, 0, 0, 1, 0, 0], reduction=None)(y_true, y_pred)
    >>> [round(v, 4) for v in np.asarray(per_example).tolist()]
    [-0.65, -0.3667]

    >>> from taylorglo_tf import taylor
    >>> loss.set_theta(taylor.PAPER_MNIST_THETA)  # the loss the paper found on MNIST
    >>> loss.theta.tolist() == list(taylor.PAPER_MNIST_THETA)
    True
    >>> TaylorGLOLoss([1.0, 2.0])
    Traceback (most recent call last):
        ...
    ValueError: theta has shape (2,), expected a vector of length 8 for order=3, inputs=('x', 'y') (trimmed form)

    Usage with the ``compile()`` API:

    ```python
    model.compile(optimizer="sgd", loss=TaylorGLOLoss(theta), metrics=["accuracy"])
    ```
    """

    def __init__(
        self,
        theta: Sequence[float] | np.ndarray,
        order: int = taylor.DEFAULT_ORDER,
        inputs: Sequence[str] = taylor.DEFAULT_INPUTS,
        from_logits: bool = False,
        convention: str = "paper",
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "taylorglo",
        dtype: Any = None,
    ) -> None:
        super().__init__(name=name, reduction=reduction, dtype=full_precision_dtype(dtype))
        # Expansion checks order and inputs (an int() here would truncate 2.5 or fail on None).
        self.expansion = taylor.Expansion(inputs, order, trimmed=True)
        self.order = int(order)
        self.inputs = self.expansion.inputs
        self.from_logits = bool(from_logits)
        self.convention = taylor.check_convention(convention)
        # 1/alpha! of each term (paper convention) or 1 (folded), applied to the coefficients in the graph.
        term_scale = (
            1.0 / self.expansion.factorials if self.convention == "paper" else np.ones_like(self.expansion.factorials)
        )
        self._param_scale = np.concatenate([np.ones(self.expansion.num_vars), term_scale]).astype(np.float32)
        self._theta64 = self._validated(theta)
        self._theta_var = keras.Variable(
            self._theta64.astype(np.float32), dtype="float32", trainable=False, autocast=False, name="taylorglo_theta"
        )
        self._progress = keras.Variable(
            0.0, dtype="float32", trainable=False, autocast=False, name="taylorglo_progress"
        )

    # -- parameters ---------------------------------------------------------------------------
    @property
    def theta(self) -> np.ndarray:
        """A float64 copy of the parameters (``convention`` as constructed)."""
        return self._theta64.copy()

    @property
    def theta_variable(self) -> keras.Variable:
        """The float32 variable the graph reads theta from."""
        return self._theta_var

    def set_theta(self, theta: Sequence[float] | np.ndarray) -> None:
        """Validate and assign new parameters; compiled steps see them without retracing."""
        value = self._validated(theta)
        self._theta_var.assign(value.astype(np.float32))
        self._theta64 = value

    @property
    def progress(self) -> float:
        return float(ops.convert_to_numpy(self._progress))

    def set_progress(self, t: float) -> None:
        """Set the training progress ``t`` in [0, 1] (read by the loss when ``"t"`` is an input)."""
        value = float(t)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"training progress t={t!r} must lie in [0, 1]")
        self._progress.assign(value)

    def _validated(self, theta: Any) -> np.ndarray:
        value = self.expansion.validate(theta)
        with np.errstate(over="ignore"):
            fits = np.all(np.isfinite(value.astype(np.float32)))
        if not fits:
            raise ValueError(f"theta {value.tolist()} overflows float32 (|entries| must stay below 3.4e38)")
        return value

    # -- evaluation ----------------------------------------------------------------------------
    def call(self, y_true: Any, y_pred: Any) -> Any:
        probs = probabilities(y_pred, self.from_logits)
        labels = one_hot_labels(y_true, probs)
        variables = {"x": labels, "y": probs, "t": self._progress}
        f = self.polynomial([variables[name] for name in self.inputs])
        return -ops.mean(f, axis=-1)

    def polynomial(self, values: Sequence[Any]) -> Any:
        """``f(z)`` with ``keras.ops``, by nested Horner schemes (one per variable)."""
        num_vars = self.expansion.num_vars
        # One multiply and one unstack for all scalars (instead of a slice + multiply per parameter):
        # each op is a kernel launch in graph mode, and the loss should cost next to nothing.
        params = ops.unstack(ops.cast(self._theta_var, self.dtype) * self._param_scale)
        diffs = [ops.cast(z, self.dtype) - params[j] for j, z in enumerate(values)]
        # Horner order: y outermost (every kept term has a y, so it factors out: fewest ops),
        # the scalar t innermost (its polynomials stay scalar arithmetic).
        nesting = sorted(range(num_vars), key=lambda j: (self.inputs[j] != "y", self.inputs[j] == "t"))
        coefficient = {
            tuple(alpha[j] for j in nesting): c for alpha, c in zip(self.expansion.multi_indices, params[num_vars:])
        }
        # never None: a trimmed expansion always keeps at least the linear y term
        return _horner(coefficient, [diffs[j] for j in nesting], (), self.order)

    # -- serialization -------------------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        # One source of truth with the TensorFlow-free writer the coordinator and result folders use.
        serialized = taylor.keras_config(
            self._theta64,
            self.order,
            self.inputs,
            convention=self.convention,
            from_logits=self.from_logits,
            name=self.name,
            reduction=self.reduction,
            dtype=self.dtype,
        )
        config.update(serialized["config"])
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TaylorGLOLoss:
        config = dict(config)
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    # -- construction from an existing loss (paper Appendix F) --------------------------------
    @classmethod
    def from_loss(
        cls,
        loss_fn: Any,
        center: Sequence[float] = (0.5, 0.5),
        order: int = taylor.DEFAULT_ORDER,
        *,
        inputs: Sequence[str] = taylor.DEFAULT_INPUTS,
        scale: float = 1.0,
        convention: str = "paper",
        **kwargs: Any,
    ) -> TaylorGLOLoss:
        """The order-``k`` Taylor approximation of an existing loss around ``center`` (Appendix F).

        Formula:

        ```python
        theta = [*center, *(scale * d^alpha f(center) for alpha in kept multi-indices)]
        ```

        The coefficients are the partial derivatives ``d^alpha f(center)`` of the
        loss's per-class term ``f``, computed by nested automatic differentiation
        (TensorFlow), times ``scale``; the result is a loss in the paper convention
        (``convention="folded"`` converts it).

        Cross-entropy and the ``1/n`` scaling: Keras computes
        ``CCE = -sum_i x_i log y_i``, so its per-class term is ``f(x, y) = x log y``
        and the TaylorGLO loss built from it approximates ``CCE / n``: its gradients
        are 1/n of cross-entropy's, which acts like a learning rate n times smaller.
        Pass ``scale=n`` to approximate ``CCE`` itself (``f = scale * x log y``).
        The paper does not say which of the two its Appendix F study used; on the
        digits test (tests/losses/test_loss_training.py) the choice matters more than the order.

        Args:
            loss_fn: either a per-class function ``f(x, y)`` (``f(x, y, t)`` when
                ``"t"`` is among ``inputs``) on scalar float64 tensors
                (TensorFlow-differentiable), written in TaylorGLO's sign convention
                ``L = -(1/n) sum_i f(x_i, y_i)``; or one of the package's per-class
                losses (``BaikalLoss``, ``Poly1Loss``, ``TaylorGLOLoss``, which
                expose ``per_class``); or Keras's ``CategoricalCrossentropy``
                (without label smoothing or logits) or the name ``"cross_entropy"``.
            center: the expansion point, one finite number per input in
                ``inputs`` order (``f`` always takes ``x, y[, t]``, whatever that
                order). Defaults to ``(0.5, 0.5)``.
            order: the order of the expansion. Defaults to 3.
            inputs: the variables of the result; must contain ``"x"`` and ``"y"``.
                Defaults to ``("x", "y")``.
            scale: multiplies every coefficient. Defaults to 1.
            convention: ``"paper"`` or ``"folded"``, of the result's theta.
            **kwargs: passed on to :class:`TaylorGLOLoss` (``from_logits``,
                ``reduction``, ``name``, ``dtype``).

        Returns:
            A :class:`TaylorGLOLoss` of ``order`` and ``inputs`` whose theta is
            ``center`` followed by the scaled derivatives.

        Raises:
            ValueError: for a loss name other than ``"cross_entropy"``, a
                ``CategoricalCrossentropy`` with logits or label smoothing, a Keras
                loss without a per-class form, anything else that is not callable;
                ``inputs`` without ``"x"``; a ``center`` of the wrong length or with
                non-finite entries; and whatever :class:`TaylorGLOLoss` refuses.

        Example:

        The third-order expansion of cross-entropy's term ``f(x, y) = x log y``
        around ``(0.5, 0.5)``: ``df/dy = x/y = 1``, ``d2f/dy2 = -x/y^2 = -2``,
        ``d3f/dy3 = 2x/y^3 = 8``, ``d2f/dxdy = 1/y = 2``, ``d3f/dxdy2 = -1/y^2 = -4``,
        ``d3f/dx2dy = 0``.

        >>> from taylorglo_tf.losses import TaylorGLOLoss
        >>> approximation = TaylorGLOLoss.from_loss("cross_entropy", center=(0.5, 0.5), order=3)
        >>> approximation.theta.tolist()
        [0.5, 0.5, 1.0, -2.0, 8.0, 2.0, -4.0, 0.0]
        >>> TaylorGLOLoss.from_loss("cross_entropy", scale=10).theta.tolist()[2:5]  # CCE itself, 10 classes
        [10.0, -20.0, 80.0]
        >>> import keras
        >>> TaylorGLOLoss.from_loss(lambda x, y: x * keras.ops.log(y)).theta.tolist() == approximation.theta.tolist()
        True
        >>> TaylorGLOLoss.from_loss("hinge")
        Traceback (most recent call last):
            ...
        ValueError: from_loss knows the loss name 'cross_entropy', not 'hinge'
        """
        per_class = _per_class_function(loss_fn)
        expansion = taylor.Expansion(tuple(inputs), int(order), trimmed=True)
        names = expansion.inputs
        if "x" not in names:
            raise ValueError(f"from_loss needs the label 'x' among inputs={names}: f(x, y) depends on it")
        centre = np.asarray(center, dtype=np.float64)
        if centre.shape != (expansion.num_vars,) or not np.all(np.isfinite(centre)):
            raise ValueError(f"center={tuple(center)} must hold {expansion.num_vars} finite numbers for inputs={names}")

        def in_input_order(*z: Any) -> Any:
            # partial_derivatives passes the variables in inputs order; f takes x, y[, t].
            value = dict(zip(names, z))
            return per_class(value["x"], value["y"], value["t"]) if "t" in value else per_class(value["x"], value["y"])

        derivatives = partial_derivatives(in_input_order, centre, int(order))
        coeffs = np.array([derivatives[alpha] for alpha in expansion.multi_indices]) * float(scale)
        theta = np.concatenate([centre, coeffs])  # partial derivatives: the paper convention
        if taylor.check_convention(convention) == "folded":
            theta = expansion.to_folded(theta)
        return cls(theta, order=order, inputs=inputs, convention=convention, **kwargs)

    def per_class(self, x: Any, y: Any, t: Any = 0.0) -> Any:
        """``f(x, y[, t])`` on scalars or tensors (used by :meth:`from_loss`)."""
        values = {"x": x, "y": y, "t": t}
        return self.polynomial([values[name] for name in self.inputs])


def _horner(coefficient: dict, diffs: list, prefix: tuple, remaining: int) -> Any:
    """``sum_alpha c_alpha prod_j d_j^alpha_j`` over the multi-indices extending ``prefix``.

    Horner's scheme in variable ``len(prefix)``: ``(..((P_r d + P_{r-1}) d + ..) d + P_0``
    where ``P_p`` is the polynomial of the remaining variables under power ``p``.
    Absent terms are ``None`` so no zeros are multiplied.
    """
    j = len(prefix)
    if j == len(diffs):
        return coefficient.get(prefix)
    acc = None
    for power in range(remaining, -1, -1):
        if acc is not None:
            acc = acc * diffs[j]
        part = _horner(coefficient, diffs, prefix + (power,), remaining - power)
        if part is not None:
            acc = part if acc is None else acc + part
    return acc


def partial_derivatives(fn: Callable[..., Any], center: np.ndarray, order: int) -> dict[tuple[int, ...], float]:
    """All partial derivatives ``d^alpha fn(center)``, ``|alpha| <= order``, by nested ``tf.GradientTape``.

    The tapes are nested ``order`` deep; each level differentiates the previous
    level's derivatives with the innermost tape still recording, so the outer tapes
    see the derivative computations. Mixed partials are taken once (Schwarz).
    """
    import tensorflow as tf  # autodiff of an arbitrary per-class function needs a concrete backend

    z = [tf.constant(float(c), dtype=tf.float64) for c in center]
    tapes = [tf.GradientTape(persistent=True) for _ in range(order)]
    for tape in tapes:
        tape.__enter__()
        tape.watch(z)
    zero = (0,) * len(z)
    try:
        level = {zero: tf.convert_to_tensor(fn(*z), dtype=tf.float64)}
    except BaseException:
        for tape in reversed(tapes):
            tape.__exit__(None, None, None)
        raise
    found = dict(level)
    for depth in range(order):
        tape = tapes[order - 1 - depth]
        tape.__exit__(None, None, None)
        next_level: dict[tuple[int, ...], Any] = {}
        for alpha, value in level.items():
            grads = tape.gradient(value, z, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            for j, grad in enumerate(grads):
                beta = alpha[:j] + (alpha[j] + 1,) + alpha[j + 1 :]
                next_level.setdefault(beta, grad)
        level = next_level
        found.update(level)
    return {alpha: float(value.numpy()) for alpha, value in found.items()}


def _cross_entropy_term(x: Any, y: Any, t: Any = 0.0) -> Any:
    """Keras CCE's per-class term in TaylorGLO's sign convention: ``f(x, y) = x log y`` (no ``t``)."""
    return x * ops.log(y)


def _per_class_function(loss_fn: Any) -> Callable[..., Any]:
    if isinstance(loss_fn, str):
        if loss_fn in ("cross_entropy", "categorical_crossentropy"):
            return _cross_entropy_term
        raise ValueError(f"from_loss knows the loss name 'cross_entropy', not {loss_fn!r}")
    if isinstance(loss_fn, keras.losses.CategoricalCrossentropy):
        options = loss_fn.get_config()
        if options.get("from_logits") or options.get("label_smoothing"):
            raise ValueError(
                "from_loss approximates CategoricalCrossentropy on probabilities without label smoothing; got "
                f"from_logits={options.get('from_logits')}, label_smoothing={options.get('label_smoothing')}"
            )
        return _cross_entropy_term
    per_class = getattr(loss_fn, "per_class", None)
    if callable(per_class):
        return per_class
    if isinstance(loss_fn, keras.losses.Loss):
        raise ValueError(
            f"{type(loss_fn).__name__} has no per-class form; pass a function f(x, y) with "
            "L = -(1/n) sum_i f(x_i, y_i) instead"
        )
    if callable(loss_fn):
        return loss_fn
    raise ValueError(f"from_loss needs a per-class function f(x, y) or a supported loss, got {loss_fn!r}")
