"""``taylorglo trainer --gpus all|0,2,...``: one trainer process per GPU, each pinned to its device.

The parent imports no TensorFlow (it would take every GPU). It lists the visible
GPUs, starts one child ``taylorglo trainer`` per chosen GPU with
``CUDA_VISIBLE_DEVICES`` set to that GPU alone and ``TF_FORCE_GPU_ALLOW_GROWTH``
on (memory growth: a child takes what it uses, not the whole card), forwards
SIGTERM/SIGINT to them, and exits with the worst child's status.

A child knows it is one by :data:`CHILD_ENV` in its environment, set by the
parent, not by its command line: it never starts children of its own, whatever
its arguments say (an abbreviated or repeated ``--gpus`` that :func:`child_argv`
missed would otherwise make every child a parent, without end).

Visible GPUs: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set (which is
also how tests fake a multi-GPU host), else the indices ``nvidia-smi`` lists.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence

# In each child's environment: the GPU it was started for. A trainer that finds it set is a child.
CHILD_ENV = "TAYLORGLO_GPU_CHILD"


class GpuError(ValueError):
    """--gpus names GPUs this host does not have (the message lists those it has)."""


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """The GPU ids this process may use, in order."""
    listed = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def parent_gpu(environ: Mapping[str, str] | None = None) -> str | None:
    """The GPU a ``--gpus`` parent started this process for, or None when this process is no such child."""
    return (os.environ if environ is None else environ).get(CHILD_ENV) or None


def chosen_gpus(value: str, visible: Sequence[str]) -> list[str]:
    """``all`` or a comma list of visible GPU ids -> the GPUs to run a worker on (each once)."""
    if not visible:
        raise GpuError(f"--gpus {value!r}: no GPU is visible on this host (CUDA_VISIBLE_DEVICES, nvidia-smi)")
    if value.strip() == "all":
        return list(visible)
    wanted = [gpu.strip() for gpu in value.split(",")]
    unknown = [gpu for gpu in wanted if gpu not in visible]
    if unknown or not all(wanted):
        raise GpuError(f"--gpus {value!r}: unknown GPU(s) {unknown or wanted}; visible GPUs: {','.join(visible)}")
    if len(set(wanted)) != len(wanted):
        raise GpuError(f"--gpus {value!r} names a GPU twice; one worker per GPU")
    return wanted


def child_argv(argv: Sequence[str], gpu: str) -> list[str]:
    """The trainer command line of the child for ``gpu``: ``--gpus`` dropped, the trainer id suffixed."""
    out: list[str] = []
    skip = False
    trainer_id = None
    for index, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        if arg == "--gpus":
            skip = True
            continue
        if arg.startswith("--gpus="):
            continue
        if arg == "--trainer-id" and index + 1 < len(argv):
            trainer_id = argv[index + 1]
            skip = True
            continue
        if arg.startswith("--trainer-id="):
            trainer_id = arg.split("=", 1)[1]
            continue
        out.append(arg)
    if trainer_id is not None:
        out += ["--trainer-id", f"{trainer_id}-gpu{gpu}"]
    return out


def run_per_gpu(argv: Sequence[str], gpus: Sequence[str]) -> int:
    """Runs ``taylorglo trainer ARGV`` once per GPU, pinned to it; returns the worst exit status."""
    children = []
    for gpu in gpus:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu, TF_FORCE_GPU_ALLOW_GROWTH="true", **{CHILD_ENV: gpu})
        command = [sys.executable, "-m", "taylorglo_tf", "trainer", *child_argv(argv, gpu)]
        children.append(subprocess.Popen(command, env=env))
        print(f"taylorglo trainer: worker on GPU {gpu} (pid {children[-1].pid})", file=sys.stderr, flush=True)

    def forward(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        codes = [child.wait() for child in children]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max(codes, key=lambda code: (code != 0, abs(code)))
