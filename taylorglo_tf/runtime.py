"""TensorFlow settings that must be in the environment before TensorFlow loads.

TensorFlow 2.21 uses its oneDNN CPU kernels by default only on CPUs with
AVX-512 VNNI/BF16 or AMX; elsewhere (AVX2 machines, most laptops and many cloud
VMs) it falls back to Eigen's. For the paper's convnets oneDNN trains about
twice as fast there (``benchmarks/cpu_kernels.py``, docs/BENCHMARKS.md), so the
``taylorglo`` command turns it on unless ``TF_ENABLE_ONEDNN_OPTS`` is already
set (the ``tiny`` test model is about 20% slower with it: ``taylorglo run``
measures both settings). The variable is inherited by the trainers and probes it starts.
On a GPU it only changes the CPU-side ops of the input pipeline.
"""

from __future__ import annotations

import os

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"
# Measured on a 2-core AVX2 VM: basic_cnn steps 1.8x (K=1) to 2.1x (K=8) faster (docs/BENCHMARKS.md).
ONEDNN_DEFAULT = "1"
# The variables above that hold our default rather than the user's choice (comma-separated),
# so that a measurement may still replace them (``taylorglo run``'s layout).
DEFAULTED_ENV = "TAYLORGLO_DEFAULTED_ENV"


def set_tensorflow_defaults() -> None:
    """Put this toolkit's TensorFlow defaults in the environment, keeping any the user set.

    Call before TensorFlow is imported (it reads them once, when it loads);
    afterwards it changes nothing in this process, only in child processes.
    """
    if ONEDNN_ENV not in os.environ:
        os.environ[ONEDNN_ENV] = ONEDNN_DEFAULT
        defaulted = {name for name in os.environ.get(DEFAULTED_ENV, "").split(",") if name}
        os.environ[DEFAULTED_ENV] = ",".join(sorted(defaulted | {ONEDNN_ENV}))


def chosen_by_user(name: str) -> bool:
    """Whether the environment variable ``name`` is set, by the user rather than by our defaults."""
    return name in os.environ and name not in os.environ.get(DEFAULTED_ENV, "").split(",")
