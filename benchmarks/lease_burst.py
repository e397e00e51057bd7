"""Lease burst: how fast N waiting LeaseCandidate calls are served when a generation of N appears.

In process, no gRPC: N threads each wait on a ``Scheduler.wait_for_leases``
ticket (the long poll LeaseCandidate awaits), then one experiment of population N is
submitted; we measure, per call, the time from the submission's return to its
lease, and count the database transactions that granted them. Run it for this
checkout and, side by side in one run, for another (``--other-checkout DIR``,
e.g. ``git worktree add /tmp/before HEAD~5``), each in its own process.

    python benchmarks/lease_burst.py --waiting 100 500 2000 --repeat 3 --other-checkout /tmp/before

With ``--repeat R`` the two checkouts alternate R times per size and the table
shows the median of each column.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# benchmarks/coordinator.py would shadow the coordinator package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def burst(waiting: int) -> dict:
    """One measurement in this process, with whatever ``coordinator`` is importable."""
    from taylorglo_tf import spec as spec_lib
    from taylorglo_tf.coordinator.scheduler import Scheduler
    from taylorglo_tf.coordinator.storage import SqliteStorage

    transactions = [0]
    with tempfile.TemporaryDirectory(prefix="taylorglo-burst-") as tmp:
        storage = SqliteStorage(Path(tmp) / "burst.db")
        for name in ("grant_lease", "grant_leases"):  # the grant method of either version
            if hasattr(storage, name):
                real = getattr(storage, name)

                def counted(*args, _real=real):
                    transactions[0] += 1
                    return _real(*args)

                setattr(storage, name, counted)
        scheduler = Scheduler(storage, prescreen=lambda theta, n: True)
        scheduler.start(reaper=False)
        granted: list[float] = []
        lock = threading.Lock()

        def wait(i: int) -> None:
            got: list = []
            arrived = threading.Event()
            ticket = scheduler.wait_for_leases(f"t{i}", lambda leases: (got.append(leases), arrived.set()))
            if not arrived.wait(60) and ticket.cancel():
                return
            arrived.wait()
            if got[0]:
                with lock:
                    granted.append(time.perf_counter())

        threads = [threading.Thread(target=wait, args=(i,), daemon=True) for i in range(waiting)]
        for t in threads:
            t.start()
        time.sleep(1.0 + waiting / 500)  # every call is waiting
        spec = spec_lib.load_spec(
            {
                "task": {"dataset": "digits", "model": "tiny", "steps": 1},
                "search": {"population": waiting, "generations": 1},
            }
        )
        submitted = time.perf_counter()
        scheduler.submit(spec)
        for t in threads:
            t.join(60)
        scheduler.stop()
        storage.close()
    delays = [1000 * (g - submitted) for g in granted]
    return {
        "waiting": waiting,
        "granted": len(granted),
        "transactions": transactions[0],
        "p50_ms": _percentile(delays, 50),
        "p99_ms": _percentile(delays, 99),
        "max_ms": max(delays),
    }


def run_checkout(checkout: Path, waiting: int) -> dict:
    runner = Path(__file__).resolve().parent / "checkout.py"  # the tree's own code, not the installed package
    out = subprocess.run(
        [sys.executable, str(runner), str(checkout), __file__, "--_one", str(waiting)],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--waiting", type=int, nargs="+", default=[100, 500], help="waiting calls (default: 100 500)")
    parser.add_argument("--other-checkout", type=Path, metavar="DIR", help="also measure this checkout")
    parser.add_argument("--repeat", type=int, default=1, help="runs per size and checkout, alternating (median shown)")
    parser.add_argument("--_one", dest="one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(burst(args.one)))
        return 0
    checkouts = [("this checkout", REPO)] + ([("other checkout", args.other_checkout)] if args.other_checkout else [])
    print(f"{'code':<16} {'waiting':>7} {'granted':>7} {'transactions':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for waiting in args.waiting:
        runs: dict[str, list[dict]] = {name: [] for name, _ in checkouts}
        for _ in range(args.repeat):
            for name, checkout in checkouts:
                runs[name].append(run_checkout(checkout, waiting))
        for name, _ in checkouts:
            r = {key: statistics.median(run[key] for run in runs[name]) for key in runs[name][0]}
            print(
                f"{name:<16} {r['waiting']:>7.0f} {r['granted']:>7.0f} {r['transactions']:>12.0f} {r['p50_ms']:>8.1f} "
                f"{r['p99_ms']:>8.1f} {r['max_ms']:>8.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
