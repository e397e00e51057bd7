"""Training steps per second with TensorFlow's oneDNN CPU kernels off and on, side by side.

    python benchmarks/cpu_kernels.py [--models tiny,basic_cnn,preact_resnet20] [--k 1,8]
                                     [--seconds 6] [--rounds 3] [--json FILE]

``TF_ENABLE_ONEDNN_OPTS`` is read once, when TensorFlow loads, so each setting
runs in its own child process; the two settings take turns (off, on, then on,
off, ...) for ``--rounds`` rounds, so a slow minute on a shared machine hits
both. A child times ``Evaluator.step_rate`` (the trainer's own compiled step:
one candidate uses ``evaluate``'s step, K > 1 the population-batched one) for
``--seconds`` seconds per K after a warm-up, and reports candidate-steps per
second; the table gives each setting's median over the rounds and on/off.

TensorFlow 2.21 turns oneDNN on by itself only on CPUs with AVX-512 VNNI/BF16 or
AMX; ``taylorglo`` turns it on everywhere unless ``TF_ENABLE_ONEDNN_OPTS`` is
set (``taylorglo_tf/runtime.py``); this benchmark is the measurement behind that.

Data: the bundled 8x8 digits for ``tiny`` (batch 32, as the embedded default),
random MNIST-shaped arrays (batch 100) for ``basic_cnn``, CIFAR-shaped (batch
128) for the others, as in ``benchmarks/population.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from evaluation import print_table

SETTINGS = ("0", "1")  # TF_ENABLE_ONEDNN_OPTS: off, on


def child(model: str, ks: list[int], seconds: float, folder: str) -> dict[str, float]:
    """In a fresh process: candidate-steps per second of ``model`` at each K."""
    from population import dataset_for

    from taylorglo_tf.training import Evaluator, Task

    if model == "tiny":
        dataset, batch = "digits", 32
    else:
        dataset, batch = dataset_for(model, 500, folder)
    task = Task(dataset=dataset, model=model, steps=10, batch_size=batch, seed=0, abort_threshold=0.0)
    rates = {}
    for k in ks:
        # A fresh evaluator per K: a population never shrinks, so a smaller K after
        # a larger one would time the larger population's step.
        evaluator = Evaluator()
        evaluator.step_rate(task, k, seconds=1.0)  # warm-up: tracing, first-run allocations
        rates[str(k)] = evaluator.step_rate(task, k, seconds=seconds)
    return rates


def run_child(setting: str, model: str, ks: list[int], seconds: float, folder: str) -> dict[str, float]:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS=setting, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, __file__, "--_child", model, ",".join(map(str, ks)), str(seconds), folder]
    out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_child":
        model, ks, seconds, folder = sys.argv[2:6]
        print(json.dumps(child(model, [int(k) for k in ks.split(",")], float(seconds), folder)))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,basic_cnn,preact_resnet20")
    parser.add_argument("--k", default="1,8", help="candidates per step to time (default: 1,8)")
    parser.add_argument("--seconds", type=float, default=6.0, help="timed seconds per K (default: 6)")
    parser.add_argument("--rounds", type=int, default=3, help="child processes per setting (default: 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    ks = [int(k) for k in args.k.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            rates: dict[str, dict[str, list[float]]] = {s: {str(k): [] for k in ks} for s in SETTINGS}
            for round_index in range(args.rounds):
                order = SETTINGS if round_index % 2 == 0 else SETTINGS[::-1]
                for setting in order:
                    for k, rate in run_child(setting, model, ks, args.seconds, folder).items():
                        rates[setting][k].append(rate)
            for k in ks:
                off = statistics.median(rates["0"][str(k)])
                on = statistics.median(rates["1"][str(k)])
                row = {
                    "model": model,
                    "k": k,
                    "off": off,
                    "on": on,
                    "off_rounds": rates["0"][str(k)],
                    "on_rounds": rates["1"][str(k)],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print_table(
        ["model", "K", "oneDNN off (candidate-steps/s)", "oneDNN on (candidate-steps/s)", "on/off"],
        [[r["model"], str(r["k"]), f"{r['off']:.1f}", f"{r['on']:.1f}", f"{r['on'] / r['off']:.2f}"] for r in rows],
    )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
