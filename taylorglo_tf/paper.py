"""The paper's published row beside the measured one (``spec.paper``; no TensorFlow).

    print(paper.table_row(spec.paper, comparison.to_dict()))

prints, for example::

    Table 1, MNIST, Basic CNN: test accuracy, mean (std)
               TaylorGLO        cross-entropy    p-value    runs
    paper      0.9951 (0.0005)  0.9899 (0.0003)  2.95e-15   10 + 10
    measured   0.9712 (0.0040)  0.9650 (0.0050)  0.0123     10 + 10
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.text import escape_controls

PAPER_RUNS = 10  # every row of the paper's Table 1 is a mean over ten runs per side (Table 1 caption)


def _missing(value: float | None, zero_is_missing: bool) -> bool:
    return value is None or not math.isfinite(value) or (zero_is_missing and value == 0)


def _cell(mean: float | None, std: float | None, published: bool = False) -> str:
    """``mean (std)``; in the paper's row a 0 means "not reported"."""
    if _missing(mean, published):
        return "-"
    if _missing(std, published):
        return f"{mean:.4f}"
    return f"{mean:.4f} ({std:.4f})"


def _p(value: float | None, published: bool = False) -> str:
    if value is None or _missing(value, published):
        return "-"
    return f"{value:.3g}" if value < 1e-3 else f"{value:.4f}"


def table_row(paper: types_pb2.PaperResult, record: Mapping[str, Any]) -> str:
    """The paper's numbers and the measured ones (a comparison's ``to_dict()``) as a small table.

    A number the paper does not report (0 in ``paper``) shows as ``-``.
    """
    summary = record.get("summary") or {}
    loss, baseline = summary.get("loss") or {}, summary.get("baseline") or {}
    welch = record.get("welch") or {}
    rows = [
        (
            "paper",
            _cell(paper.taylorglo, paper.taylorglo_std, True),
            _cell(paper.baseline, paper.baseline_std, True),
            _p(paper.p_value, True),
            f"{PAPER_RUNS} + {PAPER_RUNS}",
        ),
        (
            "measured",
            _cell(loss.get("mean"), loss.get("std")),
            _cell(baseline.get("mean"), baseline.get("std")),
            _p(welch.get("pvalue")),
            f"{loss.get('n', 0)} + {baseline.get('n', 0)}",
        ),
    ]
    lines = [
        f"{escape_controls(paper.table)}: test accuracy, mean (std)",
        f"{'':<10} {'TaylorGLO':<16} {'cross-entropy':<16} {'p-value':<10} runs",
    ]
    lines += [f"{name:<10} {a:<16} {b:<16} {p:<10} {n}" for name, a, b, p, n in rows]
    if paper.note:
        lines.append(f"paper note: {escape_controls(paper.note)}")
    return "\n".join(lines) + "\n"
