"""One candidate at a time (K = 1) at two commits, side by side: is a change to the training loop slower?

    python benchmarks/single_path.py --before 4ffb457 [--after TREE] [--model basic_cnn]
                                     [--steps 8] [--val 500] [--evals 6] [--rounds 6] [--json FILE]

Each round runs one child process per tree (``benchmarks/checkout.py``: the tree's
own ``taylorglo_tf``), the two trees taking turns going first. A child builds an
``Evaluator``, evaluates one untimed candidate (tracing, first-run allocations), then
times ``--evals`` consecutive ``Evaluator.evaluate`` calls (``TaylorGLOLoss`` with
the paper's MNIST theta scaled by 0.8..1.2), each ``--steps`` training steps and
the validation pass over ``--val`` images, by wall time and by process CPU time
(all threads). ``--before`` is a commit (extracted with ``git archive`` into a
temporary folder) or a folder; ``--after`` defaults to this checkout.

Printed: per round the after/before ratio of evaluations per hour (wall and CPU;
1.0 = the same speed, above 1 = the after tree is faster), their median and range,
and the load average around each child. The two sides of a round run back to back,
so a round's ratio resists slow drifts of other jobs' load; its spread across
rounds is this machine's noise.

Data: the ``population.py`` benchmark's random ``npz`` of the model's shape (MNIST
28x28x1, batch 100, for ``basic_cnn``), so the result does not depend on a download.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def _one(model: str, steps: int, val: int, evals: int, folder: str) -> dict:
    """In a child: time ``evals`` evaluations of one candidate each with the imported tree's code."""
    sys.path.insert(0, str(HERE))
    from population import dataset_for

    from taylorglo_tf import runtime, taylor

    runtime.set_tensorflow_defaults()  # what a trainer runs with
    from taylorglo_tf.losses import TaylorGLOLoss
    from taylorglo_tf.training import Evaluator, Task

    dataset, batch = dataset_for(model, val, folder)
    task = Task(dataset=dataset, model=model, steps=steps, batch_size=batch, seed=0, abort_threshold=0.0)
    evaluator = Evaluator()
    theta = np.array(taylor.PAPER_MNIST_THETA)
    evaluator.evaluate(TaylorGLOLoss(theta), task)  # warm-up
    started = np.array([time.perf_counter(), time.process_time()])
    statuses = [evaluator.evaluate(TaylorGLOLoss(theta * s), task).status for s in np.linspace(0.8, 1.2, evals)]
    wall, cpu = np.array([time.perf_counter(), time.process_time()]) - started
    import taylorglo_tf.training.evaluator as module

    return {"wall_s": wall, "cpu_s": cpu, "evals": evals, "statuses": statuses, "evaluator": module.__file__}


def run_tree(tree: Path, args: argparse.Namespace, folder: str) -> dict:
    command = [sys.executable, str(HERE / "checkout.py"), str(tree), __file__, "--_one", folder]
    command += ["--model", args.model, "--steps", str(args.steps), "--val", str(args.val), "--evals", str(args.evals)]
    load = os.getloadavg()[0]
    out = subprocess.run(command, cwd=tree, capture_output=True, text=True, check=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["load_average"] = [load, os.getloadavg()[0]]
    return row


def tree_of(commit_or_folder: str, tmp: str) -> Path:
    """A folder as given, else the commit's files extracted from this repository."""
    if Path(commit_or_folder).is_dir():
        return Path(commit_or_folder).resolve()
    tree = Path(tmp) / f"tree-{commit_or_folder}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit_or_folder], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--before", default="4ffb457", help="commit or folder to compare against (default: 4ffb457)")
    parser.add_argument("--after", default=str(REPO), help="folder of the tree to measure (default: this checkout)")
    parser.add_argument("--model", default="basic_cnn")
    parser.add_argument("--steps", type=int, default=8, help="training steps per evaluation (default: 8)")
    parser.add_argument("--val", type=int, default=500, help="validation images (default: 500)")
    parser.add_argument("--evals", type=int, default=6, help="timed evaluations per child (default: 6)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds, each one child per tree (default: 6)")
    parser.add_argument("--json", metavar="FILE", help="also write the rounds as JSON")
    parser.add_argument("--_one", dest="one", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        row = _one(args.model, args.steps, args.val, args.evals, args.one)
        print(json.dumps({k: float(v) if isinstance(v, np.floating) else v for k, v in row.items()}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": tree_of(args.before, tmp), "after": tree_of(args.after, tmp)}
        rounds: list[dict[str, Any]] = []
        for index in range(args.rounds):
            order = ("before", "after") if index % 2 == 0 else ("after", "before")
            rows = {side: run_tree(trees[side], args, tmp) for side in order}
            ratio = {
                kind: (rows["before"][f"{kind}_s"] / rows["before"]["evals"])
                / (rows["after"][f"{kind}_s"] / rows["after"]["evals"])
                for kind in ("wall", "cpu")
            }
            rounds.append({"order": order, "rows": rows, "ratio": ratio})
            per_eval = {side: rows[side]["wall_s"] / args.evals for side in rows}
            print(
                f"round {index + 1} ({order[0]} first): after/before evals per hour "
                f"wall {ratio['wall']:.3f}, CPU {ratio['cpu']:.3f}; s per eval (wall) "
                f"before {per_eval['before']:.2f}, after {per_eval['after']:.2f}; "
                "load {:.1f}-{:.1f}".format(rows[order[0]]["load_average"][0], rows[order[1]]["load_average"][1]),
                flush=True,
            )
    for kind in ("wall", "cpu"):
        values = np.array([r["ratio"][kind] for r in rounds])
        print(
            f"{kind}: median after/before {np.median(values):.3f}, range {values.min():.3f}-{values.max():.3f} "
            f"over {len(values)} rounds"
        )
    same = all(r["rows"]["before"]["statuses"] == r["rows"]["after"]["statuses"] for r in rounds)
    print(f"statuses agree: {same}")
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
