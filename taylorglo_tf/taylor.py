"""Multivariate Taylor parameterisation of a loss function (NumPy only).

A k-th order Taylor expansion of ``f`` in ``v`` variables ``z = (z_1..z_v)``
centred at ``a`` is (paper eq. 3)::

    f_k(z) = sum_{|alpha| <= k}  theta_alpha / alpha!  *  prod_j (z_j - a_j)^alpha_j

with multi-indices ``alpha`` in N^v, ``|alpha| = sum_j alpha_j`` and
``alpha! = prod_j alpha_j!``. Its parameters are the centre ``a`` (v numbers)
and one coefficient per multi-index: ``v + C(v+k, k)`` in all.

Variables and their order. The variables are named by ``inputs`` (``"x"``:
true label, ``"y"``: predicted probability, ``"t"``: training progress in
[0, 1]) and keep the order given there. Multi-indices are listed in
lexicographic order of ``(alpha_1, ..., alpha_v)``, the first variable most
significant: for ``("x", "y")`` this is ``1, y, y^2, y^3, x, xy, xy^2, x^2,
x^2y, x^3``, exactly the order of the paper's eq. 4.

Trimming. Terms with ``alpha_y = 0`` have a zero derivative with respect to
``y`` and cannot affect training, so the *trimmed* form (the default, used by
the loss) drops them: ``v + C(v+k, k) - C(v-1+k, k)`` parameters. For
``("x", "y")``, k=3 it leaves 8, in the paper's eq. 5 order::

    theta = <a_x, a_y, c_y, c_yy, c_yyy, c_xy, c_xyy, c_xxy>

so ``theta[0:v]`` are the centres (in ``inputs`` order) and ``theta[v:]`` the
coefficients of the kept multi-indices in the lexicographic order above.

Conventions. ``"paper"`` (default): a coefficient is the partial derivative
``theta_alpha`` and the term carries ``1/alpha!``. ``"folded"`` (the authors'
code): ``c_alpha = theta_alpha / alpha!`` and the term has no factor.
:func:`paper_to_folded` and :func:`folded_to_paper` convert; centres are the
same in both.

The loss for one sample with ``n`` classes is ``L = -(1/n) sum_i f(x_i, y_i[, t])``
(:func:`reference_loss`, float64, the reference the Keras loss is tested against).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import product
from typing import Any

import numpy as np

#: Variables a TaylorGLO loss may depend on: true label, predicted probability, training progress.
KNOWN_INPUTS = ("x", "y", "t")
CONVENTIONS = ("paper", "folded")

#: The best MNIST loss of the paper (Appendix C), paper convention, order 3, inputs ("x", "y").
PAPER_MNIST_THETA = (11.9039, -4.0240, 6.9796, 8.5834, -1.6677, 11.6064, 12.6684, -3.4674)
#: The paper's loss form: order 3 in the true label x and the predicted probability y.
DEFAULT_ORDER = 3
DEFAULT_INPUTS = ("x", "y")
# Highest expansion order: the term count grows as C(v+k, k), and enumerating the
# multi-indices of a huge order would hang instead of failing.
MAX_ORDER = 10

# What the Keras loss registers itself as; the coordinator writes loss JSON without TensorFlow.
KERAS_PACKAGE = "taylorglo_tf"
KERAS_CLASS_NAME = "TaylorGLOLoss"
KERAS_MODULE = "taylorglo_tf.losses.taylor_loss"


def full_param_count(num_vars: int, order: int) -> int:
    """Parameters of the untrimmed expansion: ``v + C(v+k, k)``."""
    _check_order(order)
    _check_num_vars(num_vars)
    return num_vars + math.comb(num_vars + order, order)


def trimmed_param_count(num_vars: int, order: int) -> int:
    """Parameters once terms without ``y`` are dropped: ``v + C(v+k, k) - C(v-1+k, k)``."""
    return full_param_count(num_vars, order) - math.comb(num_vars - 1 + order, order)


def multi_indices(num_vars: int, order: int, *, trimmed: bool = False, y_index: int = 1) -> tuple[tuple[int, ...], ...]:
    """All multi-indices with ``|alpha| <= order``, lexicographic (first variable most significant).

    With ``trimmed=True`` those with ``alpha[y_index] == 0`` are left out.
    """
    _check_order(order)
    _check_num_vars(num_vars)
    if trimmed and not 0 <= y_index < num_vars:
        raise ValueError(f"y_index={y_index} is outside the {num_vars} variables")
    # itertools.product over range(order+1) already yields lexicographic order.
    return tuple(
        alpha
        for alpha in product(range(order + 1), repeat=num_vars)
        if sum(alpha) <= order and not (trimmed and alpha[y_index] == 0)
    )


def check_inputs(inputs: Sequence[str]) -> tuple[str, ...]:
    """Validate a tuple of input-variable names (subset of ``x, y, t``, must contain ``y``)."""
    if isinstance(inputs, str):
        raise ValueError(f"inputs must be a sequence of names such as ('x', 'y'), got the string {inputs!r}")
    try:
        names = tuple(inputs)
    except TypeError:
        raise ValueError(f"inputs must be a sequence of names such as ('x', 'y'), got {inputs!r}") from None
    unknown = [name for name in names if name not in KNOWN_INPUTS]
    if unknown:
        raise ValueError(f"unknown input variable(s) {unknown} in inputs={names}; known: {KNOWN_INPUTS}")
    if len(set(names)) != len(names):
        raise ValueError(f"inputs={names} names a variable twice")
    if "y" not in names:
        raise ValueError(f"inputs={names} must contain 'y' (the prediction): without it the loss has no gradient")
    return names


def check_convention(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r} is not one of {CONVENTIONS}")
    return convention


@dataclass(frozen=True)
class Expansion:
    """The structure of a Taylor expansion: variables, order, and which terms are kept."""

    inputs: Sequence[str] = DEFAULT_INPUTS  # any sequence of names; stored as a checked tuple
    order: int = DEFAULT_ORDER
    trimmed: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", check_inputs(self.inputs))
        _check_order(self.order)

    @property
    def num_vars(self) -> int:
        return len(self.inputs)

    @property
    def y_index(self) -> int:
        return self.inputs.index("y")

    @cached_property
    def multi_indices(self) -> tuple[tuple[int, ...], ...]:
        return multi_indices(self.num_vars, self.order, trimmed=self.trimmed, y_index=self.y_index)

    @property
    def num_params(self) -> int:
        return self.num_vars + len(self.multi_indices)

    @cached_property
    def factorials(self) -> np.ndarray:
        """``alpha!`` for each kept multi-index (float64)."""
        return np.array([math.prod(math.factorial(a) for a in alpha) for alpha in self.multi_indices], dtype=np.float64)

    def describe(self) -> str:
        form = "trimmed" if self.trimmed else "full"
        return f"order={self.order}, inputs={self.inputs} ({form} form)"

    def validate(self, theta: Any) -> np.ndarray:
        """Return theta as a float64 vector, or raise ValueError naming the expected length."""
        try:
            arr = np.asarray(theta, dtype=np.float64)
        except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: ints beyond a double
            raise ValueError(
                f"theta must be a vector of {self.num_params} numbers for {self.describe()}: {exc}"
            ) from None
        if arr.ndim != 1 or arr.shape[0] != self.num_params:
            raise ValueError(
                f"theta has shape {arr.shape}, expected a vector of length {self.num_params} for {self.describe()}"
            )
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"theta has non-finite entries at positions {bad.tolist()}: {arr[bad].tolist()}")
        return arr

    def split(self, theta: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(centres, coefficients)`` of a validated theta."""
        arr = self.validate(theta)
        return arr[: self.num_vars], arr[self.num_vars :]

    def to_folded(self, theta: Any) -> np.ndarray:
        """Paper convention -> folded: ``c_alpha = theta_alpha / alpha!`` (centres unchanged)."""
        centres, coeffs = self.split(theta)
        return np.concatenate([centres, coeffs / self.factorials])

    def to_paper(self, theta: Any) -> np.ndarray:
        """Folded convention -> paper: ``theta_alpha = c_alpha * alpha!`` (centres unchanged)."""
        centres, coeffs = self.split(theta)
        return np.concatenate([centres, coeffs * self.factorials])

    def folded_coefficients(self, theta: Any, convention: str = "paper") -> np.ndarray:
        """The coefficients as they multiply the monomials (folded), whatever ``convention`` theta is in."""
        check_convention(convention)
        _, coeffs = self.split(theta)
        return coeffs / self.factorials if convention == "paper" else coeffs

    def evaluate(self, theta: Any, values: Mapping[str, Any] | Sequence[Any], convention: str = "paper") -> np.ndarray:
        """``f_k(z)`` in float64, summing each term explicitly (the reference evaluation).

        ``values`` maps each input name to an array (or lists them in ``inputs`` order);
        the arrays broadcast against each other.
        """
        arrays = self._variables(values)
        centres, _ = self.split(theta)
        coeffs = self.folded_coefficients(theta, convention)
        diffs = [z - a for z, a in zip(arrays, centres)]
        total = np.zeros(np.broadcast_shapes(*(d.shape for d in diffs)), dtype=np.float64)
        for coeff, alpha in zip(coeffs, self.multi_indices):
            term = np.full_like(total, coeff)
            for diff, power in zip(diffs, alpha):
                term = term * diff**power
            total += term
        return total

    def _variables(self, values: Mapping[str, Any] | Sequence[Any]) -> list[np.ndarray]:
        if isinstance(values, Mapping):
            missing = [name for name in self.inputs if name not in values]
            if missing:
                raise ValueError(f"values for input variable(s) {missing} are missing (inputs={self.inputs})")
            arrays = [_float_array(values[name], f"values[{name!r}]") for name in self.inputs]
        else:
            try:
                seq = list(values)
            except TypeError:
                raise ValueError(f"values must map or list arrays for inputs={self.inputs}, got {values!r}") from None
            if len(seq) != self.num_vars:
                raise ValueError(f"got {len(seq)} value arrays, expected {self.num_vars} for inputs={self.inputs}")
            arrays = [_float_array(v, f"values[{i}] ({name})") for i, (v, name) in enumerate(zip(seq, self.inputs))]
        try:
            np.broadcast_shapes(*(a.shape for a in arrays))
        except ValueError:
            shapes = {name: a.shape for name, a in zip(self.inputs, arrays)}
            raise ValueError(f"the value arrays' shapes {shapes} do not broadcast together") from None
        return arrays


def expected_theta_length(
    order: int = DEFAULT_ORDER,
    inputs: Sequence[str] = DEFAULT_INPUTS,
    *,
    trimmed: bool = True,
) -> int:
    """Length of theta for a TaylorGLO loss of this order and inputs (8 for the paper's default)."""
    return Expansion(inputs, order, trimmed).num_params


def paper_to_folded(
    theta: Any,
    order: int = DEFAULT_ORDER,
    inputs: Sequence[str] = DEFAULT_INPUTS,
    *,
    trimmed: bool = True,
) -> np.ndarray:
    """Fold the ``1/alpha!`` factors into the coefficients (the authors' code convention)."""
    return Expansion(inputs, order, trimmed).to_folded(theta)


def folded_to_paper(
    theta: Any,
    order: int = DEFAULT_ORDER,
    inputs: Sequence[str] = DEFAULT_INPUTS,
    *,
    trimmed: bool = True,
) -> np.ndarray:
    """Inverse of :func:`paper_to_folded`: multiply the coefficients by ``alpha!``."""
    return Expansion(inputs, order, trimmed).to_paper(theta)


def untrim(theta: Any, order: int = DEFAULT_ORDER, inputs: Sequence[str] = DEFAULT_INPUTS) -> np.ndarray:
    """Trimmed theta -> full theta with zeros for the dropped (y-free) terms (same gradients)."""
    trimmed = Expansion(inputs, order, True)
    full = Expansion(inputs, order, False)
    centres, coeffs = trimmed.split(theta)
    by_index = dict(zip(trimmed.multi_indices, coeffs))
    return np.concatenate([centres, [by_index.get(alpha, 0.0) for alpha in full.multi_indices]])


def reference_loss(
    theta: Any,
    y_true: Any,
    y_pred: Any,
    *,
    order: int = DEFAULT_ORDER,
    inputs: Sequence[str] = DEFAULT_INPUTS,
    convention: str = "paper",
    progress: float = 0.0,
) -> np.ndarray:
    """Per-sample TaylorGLO loss ``-(1/n) sum_i f(x_i, y_i[, t])`` in float64.

    ``y_true`` one-hot (or soft) labels and ``y_pred`` probabilities, both ``[..., n]``;
    ``progress`` is the training progress ``t`` in [0, 1] (used when ``"t"`` is an input).
    """
    expansion = Expansion(inputs, order, True)
    x = _float_array(y_true, "y_true")
    y = _float_array(y_pred, "y_pred")
    if x.shape != y.shape or x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"y_true shape {x.shape} and y_pred shape {y.shape} must be the same [..., n] with n >= 1")
    t = _float_array(progress, "progress")
    if t.ndim != 0 or not 0.0 <= float(t) <= 1.0:
        raise ValueError(f"progress={progress!r} must be a number in [0, 1]")
    values = {"x": x, "y": y, "t": np.full_like(y, float(t))}
    f = expansion.evaluate(theta, values, convention)
    return -np.mean(f, axis=-1)


def keras_config(
    theta: Any,
    order: int = DEFAULT_ORDER,
    inputs: Sequence[str] = DEFAULT_INPUTS,
    *,
    convention: str = "paper",
    from_logits: bool = False,
    name: str = "taylorglo",
    reduction: str | None = "sum_over_batch_size",
    dtype: str = "float32",
) -> dict[str, Any]:
    """The Keras serialization of ``TaylorGLOLoss(theta, ...)``, built without TensorFlow.

    ``losses.load_json`` / ``keras.saving.deserialize_keras_object`` turn it back
    into the loss; the coordinator uses this to write a result's loss JSON.
    ``TaylorGLOLoss.get_config`` returns this function's ``"config"`` entry, so the
    two cannot drift apart (a test compares it with ``keras.saving.serialize_keras_object``).
    """
    expansion = Expansion(inputs, order, True)
    arr = expansion.validate(theta)
    return {
        "module": KERAS_MODULE,
        "class_name": KERAS_CLASS_NAME,
        "config": {
            "name": name,
            "reduction": reduction,
            "dtype": dtype,
            "theta": [float(v) for v in arr],
            "order": int(order),
            "inputs": list(expansion.inputs),
            "from_logits": bool(from_logits),
            "convention": check_convention(convention),
        },
        "registered_name": f"{KERAS_PACKAGE}>{KERAS_CLASS_NAME}",
    }


def _float_array(value: Any, what: str) -> np.ndarray:
    """``value`` as a float64 array, or a ValueError naming ``what`` (not numpy's TypeError/OverflowError)."""
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"{what} must be an array of numbers, got {value!r}: {exc}") from None


def _check_order(order: int) -> None:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or not 1 <= order <= MAX_ORDER:
        raise ValueError(f"order must be an integer in [1, {MAX_ORDER}], got {order!r}")


def _check_num_vars(num_vars: int) -> None:
    if isinstance(num_vars, bool) or not isinstance(num_vars, (int, np.integer)) or num_vars < 1:
        raise ValueError(f"the number of variables must be an integer >= 1, got {num_vars!r}")
