"""The optional parts of the install: which extra brings which module, and the error that names it.

The base install (``pip install taylorglo-tf``) is slim: the client commands,
specs, the Taylor parameterisation and the loss JSON. The coordinator and the
training stack are extras (pyproject.toml), so a module of an extra may be
missing; :func:`needs` turns that ``ModuleNotFoundError`` into one that says
which extra to install.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

COORDINATOR = "coordinator"
TRAIN = "train"

# top-level module -> the extra that installs it
EXTRA_OF = {
    "cma": COORDINATOR,
    "grpc_reflection": COORDINATOR,
    "prometheus_client": COORDINATOR,
    "tensorflow": TRAIN,
    "keras": TRAIN,
    "tensorboard": TRAIN,
    "scipy": TRAIN,
    "tensorflow_datasets": TRAIN,
    "matplotlib": TRAIN,
    "sklearn": TRAIN,
}


def install_hint(module: str) -> str | None:
    """``pip install 'taylorglo-tf[EXTRA]'`` for a module an extra installs, else None."""
    extra = EXTRA_OF.get(module.partition(".")[0])
    return None if extra is None else f"pip install 'taylorglo-tf[{extra}]'"


@contextlib.contextmanager
def needs(feature: str) -> Iterator[None]:
    """Re-raise a missing module of an extra as a ``ModuleNotFoundError`` naming ``feature`` and the extra."""
    try:
        yield
    except ModuleNotFoundError as error:
        hint = install_hint(error.name or "")
        if hint is None:
            raise
        raise ModuleNotFoundError(
            f"{feature} needs the module {error.name!r}, which this install lacks; install it with: {hint}",
            name=error.name,
        ) from error
