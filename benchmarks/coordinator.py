"""Coordinator throughput with simulated trainers.

Starts a real coordinator process (``python -m taylorglo_tf coordinator``) on a
loopback port with a fresh SQLite database, submits four experiments whose
populations together hold ``--work`` x the trainer count of candidates per
generation round, and runs N simulated trainers: real
:class:`taylorglo_tf.trainer.worker.Worker` loops whose evaluation sleeps a fixed time, as
threads in a few trainer processes (at most 32 threads each). All trainers run
for the same wall-clock window; the first seconds are warm-up.

Side by side, the same harness runs against a null server (a WorkerService
that grants a lease at once and accepts every report: no storage, no CMA-ES, no
generation barrier), which shows what the harness and the machine themselves
cost.

Per trainer count it reports, over the measurement window:

- throughput: evaluations reported per second, and as a percentage of the ideal
  ``trainers / eval_s`` (every trainer always evaluating);
- idle: fraction of trainer time not spent evaluating (lease + report RPCs,
  waiting for work);
- lease latency p50/p99: LeaseCandidate round trip for granted leases, in ms;
- coordinator CPU per evaluation: user+system CPU time of the coordinator
  process (from /proc) divided by evaluations, in ms.

    python benchmarks/coordinator.py            # 1, 8, 32, 128 trainers, 1 s evaluations
    python benchmarks/coordinator.py --quick    # smoke test: 1 and 8 trainers, 0.05 s
    python benchmarks/coordinator.py --scheduler-only   # lease/report cost in-process, SQLite vs none
    python benchmarks/coordinator.py --simulate         # generation barrier cost, virtual clock
    python benchmarks/coordinator.py --other-checkout /tmp/old   # before/after: also coordinator and
                                                                 # worker loop of another source tree
    python benchmarks/coordinator.py --other-ref COMMIT          # the same, exported from git
    python benchmarks/coordinator.py --scale --other-ref COMMIT  # 64, 512 and 2,000 trainers waiting at
                                                                 # generation barriers (10 s evaluations, 1x work)
    python benchmarks/coordinator.py --burst --other-ref COMMIT  # N trainers waiting in LeaseCandidate, then
                                                                 # a generation of N candidates appears

Targets: >= 95 % of ideal throughput at 128 trainers with 1 s evaluations; with
``--scale``, the share of ideal throughput flat from 64 to 2,000 trainers (more
trainers than the server has threads wait in LeaseCandidate at every generation
barrier).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CHECKOUT_RUNNER = REPO / "benchmarks" / "checkout.py"  # runs a tree's own code (see there)

from taylorglo_tf import spec as spec_module  # noqa: E402
from taylorglo_tf.rpc import experiment_service_pb2, experiment_service_pb2_grpc  # noqa: E402

THREADS_PER_PROCESS = 128  # 2,000 trainers in 16 processes
EXPERIMENTS = 4


# -- simulated trainers (runs inside a trainer process) ---------------------------


def trainer_process(
    address: str,
    threads: int,
    eval_s: float,
    start_at: float,
    end_at: float,
    warmup_s: float,
    checkout: str = str(REPO),
) -> dict:
    """Runs ``threads`` Worker loops (``taylorglo_tf.trainer.worker`` from the source tree ``checkout``) from
    wall-clock ``start_at`` to ``end_at``; returns their statistics."""
    from benchmarks.checkout import use

    use(checkout)
    from taylorglo_tf.trainer.worker import Backoff, Outcome, Worker

    window = (start_at + warmup_s, end_at)
    finished: list[tuple[float, float]] = []  # (start, end) wall-clock times of evaluations
    running: dict[int, float] = {}  # thread id -> start of the evaluation in progress
    lock = threading.Lock()

    def evaluate(lease, heartbeat):
        begin = time.time()
        with lock:
            running[threading.get_ident()] = begin
        time.sleep(eval_s)
        with lock:
            finished.append((begin, time.time()))
            del running[threading.get_ident()]
        return Outcome(status="ok", fitness=0.5, val_accuracy=0.5, steps=1, wall_time_s=eval_s)

    channel = grpc.insecure_channel(address)
    workers = [
        Worker(channel, evaluate, f"bench-{os.getpid()}-{i}", wait_ms=2000, grace_s=0.0, backoff=Backoff(0.05, 1.0))
        for i in range(threads)
    ]
    time.sleep(max(0.0, start_at - time.time()))
    runners = [threading.Thread(target=w.run, daemon=True) for w in workers]
    for r in runners:
        r.start()
    time.sleep(max(0.0, end_at - time.time()))
    with lock:  # evaluations cut off by the window's end were busy until then
        busy_intervals = finished + [(begin, end_at) for begin in running.values()]
    for w in workers:
        w.request_stop(grace_s=0.0)
    for r in runners:
        r.join(10)

    # Time each trainer spent evaluating inside the window.
    busy = sum(max(0.0, min(e, window[1]) - max(s, window[0])) for s, e in busy_intervals)
    completed = sum(1 for s, e in busy_intervals if window[0] <= e < window[1])
    lease_wait = [x for w in workers for x in w.lease_wait_s]
    report = [x for w in workers for x in w.report_s]
    return {
        "busy_s": busy,
        "completed": completed,
        "lease_wait_s": lease_wait,
        "report_s": report,
        "reported": sum(w.reported for w in workers),
    }


# -- orchestration ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(math.ceil(q / 100 * len(ordered))) - 1)]


def null_server(port: int) -> None:
    """The baseline server: a WorkerService that grants a lease at once and accepts every
    report, with no storage and no CMA-ES (same gRPC server settings as the coordinator)."""
    from concurrent import futures

    from taylorglo_tf.coordinator.defaults import DEFAULT_MAX_WORKERS
    from taylorglo_tf.rpc import types_pb2, worker_service_pb2, worker_service_pb2_grpc

    class NullWorkerService(worker_service_pb2_grpc.WorkerServiceServicer):
        def __init__(self) -> None:
            self._count = 0
            self._lock = threading.Lock()

        def LeaseCandidate(self, request, context):
            with self._lock:
                self._count += 1
                n = self._count
            return worker_service_pb2.LeaseCandidateResponse(
                lease=worker_service_pb2.Lease(
                    lease_id=f"null-{n}",
                    experiment_id="null",
                    index=n,
                    theta=[0.0] * 8,
                    attempt=1,
                    ttl_s=60.0,
                    task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=1),
                )
            )

        def Heartbeat(self, request, context):
            return worker_service_pb2.HeartbeatResponse(keep_going=True, ttl_s=60.0)

        def ReportResult(self, request, context):
            return worker_service_pb2.ReportResultResponse(accepted=True)

        def ReturnLease(self, request, context):
            return worker_service_pb2.ReturnLeaseResponse(returned=True)

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=DEFAULT_MAX_WORKERS))
    worker_service_pb2_grpc.add_WorkerServiceServicer_to_server(NullWorkerService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


def _start_server(kind: str, workdir: Path, lease_ttl: float, checkout: Path = REPO) -> tuple[subprocess.Popen, str]:
    """Starts the coordinator (``kind="coordinator"``, from the source tree ``checkout``) or the
    null baseline; returns it once it answers."""
    port = _free_port()
    address = f"127.0.0.1:{port}"
    log = open(workdir / f"{kind}.log", "w")  # noqa: SIM115 (the process writes it until it ends)
    env = dict(os.environ)
    if kind == "coordinator":
        command = [
            sys.executable,
            str(CHECKOUT_RUNNER),
            str(checkout),
            "-m",
            "taylorglo_tf",
            "coordinator",
            "--listen",
            address,
            "--db",
            str(workdir / "bench.db"),
            "--lease-ttl",
            str(lease_ttl),
            "--log-level",
            "WARNING",
        ]
    else:
        command = [sys.executable, __file__, "--_null-server", str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=checkout, env=env)
    deadline = time.time() + 60
    while True:
        try:
            grpc.channel_ready_future(grpc.insecure_channel(address)).result(timeout=1)
            return process, address
        except grpc.FutureTimeoutError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{kind} did not start; see {workdir / f'{kind}.log'}") from None


def _submit_work(address: str, trainers: int, eval_s: float, duration_s: float, work_multiple: float) -> list[str]:
    """Submits EXPERIMENTS searches whose generations together hold ``work_multiple`` x
    the trainers' worth of candidates (population = work_multiple * trainers / EXPERIMENTS)."""
    stub = experiment_service_pb2_grpc.ExperimentServiceStub(grpc.insecure_channel(address))
    population = max(8, math.ceil(work_multiple * trainers / EXPERIMENTS))
    generations = max(3, math.ceil(duration_s / eval_s) + 2)
    ids = []
    for i in range(EXPERIMENTS):
        spec = spec_module.load_spec(
            {
                "name": f"bench-{i}",
                "task": {"dataset": "digits", "model": "tiny", "steps": 1},
                "search": {"population": population, "generations": generations, "seed": i + 1},
            }
        )
        ids.append(stub.SubmitExperiment(experiment_service_pb2.SubmitExperimentRequest(spec=spec), timeout=30).id)
    return ids


def measure(
    server: str,
    trainers: int,
    eval_s: float,
    duration_s: float,
    warmup_s: float,
    workdir: Path,
    work_multiple: float = 4.0,
    checkout: Path = REPO,
    label: str = "",
) -> dict:
    """One configuration: a fresh server (``"coordinator"`` from ``checkout``, or ``"null"``),
    ``trainers`` simulated trainers, one measurement window."""
    process, address = _start_server(server, workdir, lease_ttl=max(30.0, 10 * eval_s), checkout=checkout)
    stub = experiment_service_pb2_grpc.ExperimentServiceStub(grpc.insecure_channel(address))
    try:
        ids = _submit_work(address, trainers, eval_s, duration_s, work_multiple) if server == "coordinator" else []
        processes = math.ceil(trainers / THREADS_PER_PROCESS)
        start_at = time.time() + 3.0 + 1.0 * processes  # let every trainer process import and connect first
        end_at = start_at + warmup_s + duration_s
        children = []
        for p in range(processes):
            threads = trainers // processes + (1 if p < trainers % processes else 0)
            children.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--_trainer-process",
                        json.dumps(
                            {
                                "address": address,
                                "threads": threads,
                                "eval_s": eval_s,
                                "start_at": start_at,
                                "end_at": end_at,
                                "warmup_s": warmup_s,
                                "checkout": str(checkout),
                            }
                        ),
                    ],
                    stdout=subprocess.PIPE,
                    cwd=REPO,
                )
            )
        time.sleep(max(0.0, start_at + warmup_s - time.time()))
        cpu_before = _cpu_seconds(process.pid)
        time.sleep(max(0.0, end_at - time.time()))
        cpu_after = _cpu_seconds(process.pid)
        stats = [json.loads(child.communicate(timeout=120)[0]) for child in children]
        for experiment_id in ids:
            with contextlib.suppress(grpc.RpcError):
                stub.CancelExperiment(
                    experiment_service_pb2.CancelExperimentRequest(experiment_id=experiment_id), timeout=10
                )
    finally:
        process.terminate()
        process.wait(30)
    completed = sum(s["completed"] for s in stats)
    busy = sum(s["busy_s"] for s in stats)
    waits = [x for s in stats for x in s["lease_wait_s"]]
    reports = [x for s in stats for x in s["report_s"]]
    ideal = trainers / eval_s
    return {
        "server": server if checkout == REPO else f"{server} ({label or checkout.name})",
        "trainers": trainers,
        "eval_s": eval_s,
        "work": f"{work_multiple:g}x" if server == "coordinator" else "inf",
        "window_s": duration_s,
        "evaluations": completed,
        "throughput": completed / duration_s,
        "ideal": ideal,
        "percent_of_ideal": 100 * completed / duration_s / ideal,
        "idle_percent": 100 * (1 - busy / (trainers * duration_s)),
        "lease_p50_ms": 1000 * _percentile(waits, 50),
        "lease_p99_ms": 1000 * _percentile(waits, 99),
        "report_p50_ms": 1000 * _percentile(reports, 50),
        "report_p99_ms": 1000 * _percentile(reports, 99),
        "coordinator_cpu_ms_per_eval": 1000 * (cpu_after - cpu_before) / max(1, completed),
        "coordinator_cpu_percent": 100 * (cpu_after - cpu_before) / duration_s,
    }


def burst(trainers: int, workdir: Path, checkout: Path = REPO, label: str = "", wait_ms: int = 10_000) -> dict:
    """``trainers`` LeaseCandidate long polls wait on a fresh coordinator (from ``checkout``);
    meanwhile a client reads an experiment 5 times; then an experiment with a population
    of ``trainers`` is submitted and every waiting poll should get one candidate; then every
    lease is reported at once. Client calls are futures on a few connections of this
    process, so the harness holds no thread per trainer."""
    from taylorglo_tf.rpc import worker_service_pb2, worker_service_pb2_grpc

    process, address = _start_server("coordinator", workdir, lease_ttl=600.0, checkout=checkout)
    channels = [grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(8)]
    try:
        workers = [worker_service_pb2_grpc.WorkerServiceStub(c) for c in channels]
        experiments = experiment_service_pb2_grpc.ExperimentServiceStub(channels[0])
        small = spec_module.load_spec(
            {"task": {"dataset": "digits", "model": "tiny", "steps": 1}, "search": {"population": 2, "generations": 1}}
        )
        first = experiments.SubmitExperiment(experiment_service_pb2.SubmitExperimentRequest(spec=small), timeout=30)
        experiments.CancelExperiment(experiment_service_pb2.CancelExperimentRequest(experiment_id=first.id), timeout=30)

        def ask(trainer_id: str, k: int):
            return workers[k % len(workers)].LeaseCandidate.future(
                worker_service_pb2.LeaseCandidateRequest(trainer_id=trainer_id, wait_ms=wait_ms),
                timeout=wait_ms / 1000 + 30,
            )

        polls = [(f"burst-{i}", ask(f"burst-{i}", i)) for i in range(trainers)]
        time.sleep(2.0)  # every poll reaches the server and waits
        reads = []
        for _ in range(5):  # a client while the trainers wait
            started = time.perf_counter()
            with contextlib.suppress(grpc.RpcError):
                experiments.GetExperiment(
                    experiment_service_pb2.GetExperimentRequest(experiment_id=first.id), timeout=wait_ms / 1000 + 10
                )
            reads.append(time.perf_counter() - started)
        spec = spec_module.load_spec(
            {
                "task": {"dataset": "digits", "model": "tiny", "steps": 1},
                "search": {"population": max(2, trainers), "generations": 2},
            }
        )
        submitted = time.perf_counter()
        experiments.SubmitExperiment(
            experiment_service_pb2.SubmitExperimentRequest(spec=spec), timeout=wait_ms / 1000 + 30
        )
        granted_at: dict[str, float] = {}
        for trainer_id, poll in polls:  # record when each answer arrives
            poll.add_done_callback(lambda _, t=trainer_id: granted_at.setdefault(t, time.perf_counter()))
        leases = []  # (trainer id, lease)
        for k, (trainer_id, first_poll) in enumerate(polls):  # a poll that ended without work asks again
            poll = first_poll
            while True:
                try:
                    response = poll.result()
                except grpc.RpcError:
                    response = None
                if response is not None and response.HasField("lease"):
                    break
                granted_at.pop(trainer_id, None)
                poll = ask(trainer_id, k)
                poll.add_done_callback(lambda _, t=trainer_id: granted_at.setdefault(t, time.perf_counter()))
            leases.append((trainer_id, response.lease))
        grants = [granted_at[t] - submitted for t, _ in leases]
        reported = time.perf_counter()
        acks = [
            workers[i % len(workers)].ReportResult.future(
                worker_service_pb2.ReportResultRequest(
                    lease_id=lease.lease_id,
                    trainer_id=trainer_id,
                    status=worker_service_pb2.EVALUATION_STATUS_OK,
                    fitness=0.5,
                ),
                timeout=120,
            )
            for i, (trainer_id, lease) in enumerate(leases)
        ]
        accepted = failed = 0
        for ack in acks:
            try:
                accepted += ack.result().accepted
            except grpc.RpcError:  # e.g. CANCELLED by an overloaded server: a trainer would retry
                failed += 1
        report_s = time.perf_counter() - reported
    finally:
        for channel in channels:
            channel.close()
        process.terminate()
        process.wait(30)
    return {
        "server": "coordinator" if checkout == REPO else f"coordinator ({label or checkout.name})",
        "trainers": trainers,
        "read_p50_ms": 1000 * _percentile(reads, 50),
        "read_max_ms": 1000 * max(reads),
        "grant_all_s": max(grants),
        "lease_p50_ms": 1000 * _percentile(grants, 50),
        "lease_p99_ms": 1000 * _percentile(grants, 99),
        "leases_per_s": trainers / max(grants),
        "reports_per_s": accepted / report_s,
        "accepted": accepted,
        "reports_failed": failed,
    }


def _lease_now(scheduler, trainer_id: str):
    """One lease or None, as a LeaseCandidate call that does not wait gets it (a ticket, cancelled at once)."""
    granted: list = []
    ticket = scheduler.wait_for_leases(trainer_id, granted.append)
    if ticket.cancel() or not granted[0]:
        return None
    return granted[0][0]


class _NoStorage:
    """A Storage that keeps nothing (for the scheduler's cost without SQLite)."""

    def __getattr__(self, name: str):
        return (lambda *args, **kwargs: []) if name.startswith("load") else (lambda *args, **kwargs: None)


def scheduler_cost(evaluations: int = 4000, population: int = 128) -> list[dict]:
    """Time of a lease (``Scheduler.wait_for_leases``) and ``Scheduler.report`` in-process (no gRPC), the time the
    scheduler lock is held per call, with SQLite and with no storage at all: what batching
    commits could save at most. Four experiments; reports include the CMA-ES steps."""
    from taylorglo_tf.coordinator.scheduler import Report, Scheduler
    from taylorglo_tf.coordinator.storage import SqliteStorage
    from taylorglo_tf.rpc import types_pb2, worker_service_pb2

    rows = []
    with tempfile.TemporaryDirectory(prefix="taylorglo-bench-") as tmp:
        for name, storage in (
            ("sqlite (WAL, synchronous=NORMAL)", SqliteStorage(Path(tmp) / "s.db")),
            ("no storage", _NoStorage()),
        ):
            scheduler = Scheduler(storage, prescreen=lambda theta, n: True)
            scheduler.start(reaper=False)
            for seed in range(1, EXPERIMENTS + 1):
                scheduler.submit(
                    spec_module.load_spec(
                        {
                            "task": {"dataset": "digits", "model": "tiny", "steps": 1},
                            "search": {"population": population, "generations": 1000, "seed": seed},
                        }
                    )
                )
            metrics = types_pb2.EvaluationMetrics(val_accuracy=0.5, steps=1, wall_time_s=1.0)
            times: dict[str, list[float]] = {"lease": [], "report": []}
            for _ in range(evaluations):
                started = time.perf_counter()
                lease = _lease_now(scheduler, "bench")
                times["lease"].append(time.perf_counter() - started)
                started = time.perf_counter()
                scheduler.report(Report(lease.lease_id, "bench", worker_service_pb2.EVALUATION_STATUS_OK, 0.5, metrics))
                times["report"].append(time.perf_counter() - started)
            scheduler.stop()
            if hasattr(storage, "close"):
                storage.close()
            for call, values in times.items():
                rows.append(
                    {
                        "storage": name,
                        "call": call,
                        "mean_ms": 1000 * sum(values) / len(values),
                        "p50_ms": 1000 * _percentile(values, 50),
                        "p99_ms": 1000 * _percentile(values, 99),
                    }
                )
    return rows


def simulate_barrier(
    trainers: int, work_multiple: float, spread: float, seconds: float = 60.0, warmup_s: float = 10.0, seed: int = 0
) -> float:
    """Idle % of ``trainers`` under the real scheduler with a virtual clock: evaluations take
    1 s +- ``spread`` (uniform), RPCs are instant, idle trainers retry whenever a result
    arrives. What is left is the cost of the generation barrier and the lease policy alone."""
    import heapq
    import itertools
    import random

    from taylorglo_tf.coordinator.scheduler import Report, Scheduler
    from taylorglo_tf.coordinator.storage import SqliteStorage
    from taylorglo_tf.rpc import worker_service_pb2

    now = [0.0]
    rng = random.Random(seed)
    end = warmup_s + seconds
    busy = 0.0
    events: list[tuple[float, int, str, object]] = []  # (finish time, tie-breaker, trainer, lease)
    order = itertools.count()
    waiting: list[str] = []
    with tempfile.TemporaryDirectory(prefix="taylorglo-bench-") as tmp:
        storage = SqliteStorage(Path(tmp) / "sim.db")
        scheduler = Scheduler(storage, lease_ttl_s=1e9, clock=lambda: now[0], prescreen=lambda theta, n: True)
        scheduler.start(reaper=False)
        population = max(8, math.ceil(work_multiple * trainers / EXPERIMENTS))
        for s_ in range(1, EXPERIMENTS + 1):
            scheduler.submit(
                spec_module.load_spec(
                    {
                        "task": {"dataset": "digits", "model": "tiny", "steps": 1},
                        "search": {"population": population, "generations": 100_000, "seed": s_},
                    }
                )
            )

        def try_lease(trainer: str) -> None:
            nonlocal busy
            lease = _lease_now(scheduler, trainer)
            if lease is None:
                waiting.append(trainer)
                return
            duration = rng.uniform(1 - spread, 1 + spread)
            busy += max(0.0, min(now[0] + duration, end) - max(now[0], warmup_s))
            heapq.heappush(events, (now[0] + duration, next(order), trainer, lease))

        for k in range(trainers):
            try_lease(f"t{k}")
        while events and events[0][0] <= end:
            now[0], _, trainer, lease = heapq.heappop(events)
            scheduler.report(Report(lease.lease_id, trainer, worker_service_pb2.EVALUATION_STATUS_OK, 0.5, None))
            for t in [trainer] + waiting:
                if t != trainer:
                    waiting.remove(t)
                try_lease(t)
        scheduler.stop()
        storage.close()
    return 100 * (1 - busy / (trainers * seconds))


def _other_tree(args: argparse.Namespace, tmp: Path) -> tuple[Path | None, str]:
    """The source tree of ``--other-checkout``, or ``--other-ref`` exported from git under ``tmp``."""
    if args.other_ref:
        other = tmp / "other"
        other.mkdir()
        archive = subprocess.run(["git", "archive", args.other_ref], cwd=REPO, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(other)], input=archive.stdout, check=True)
        return other, args.other_ref
    return (args.other_checkout.resolve(), "") if args.other_checkout else (None, "")


def print_burst_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Trainers waiting in LeaseCandidate, then a generation of as many candidates")
    for column in (
        "server",
        "trainers",
        "client read p50 / max ms",
        "all granted s",
        "lease p50 ms",
        "lease p99 ms",
        "leases/s",
        "reports/s",
        "reports failed",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["server"],
            str(r["trainers"]),
            f"{r['read_p50_ms']:.1f} / {r['read_max_ms']:.0f}",
            f"{r['grant_all_s']:.2f}",
            f"{r['lease_p50_ms']:.0f}",
            f"{r['lease_p99_ms']:.0f}",
            f"{r['leases_per_s']:.0f}",
            f"{r['reports_per_s']:.0f}",
            str(r["reports_failed"]),
        )
    Console(width=150).print(table)


def print_scheduler_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Scheduler calls in-process (no gRPC)")
    for column in ("storage", "call", "mean ms", "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(r["storage"], r["call"], f"{r['mean_ms']:.3f}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}")
    Console(width=120).print(table)


def print_table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Coordinator throughput (simulated trainers, loopback)")
    for column in (
        "server",
        "work",
        "trainers",
        "eval s",
        "evals",
        "evals/s",
        "ideal/s",
        "% of ideal",
        "idle %",
        "lease p50 ms",
        "lease p99 ms",
        "report p50 ms",
        "report p99 ms",
        "server CPU ms/eval",
        "server CPU %",
    ):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["server"],
            r["work"],
            str(r["trainers"]),
            f"{r['eval_s']:g}",
            str(r["evaluations"]),
            f"{r['throughput']:.1f}",
            f"{r['ideal']:.1f}",
            f"{r['percent_of_ideal']:.1f}",
            f"{r['idle_percent']:.1f}",
            f"{r['lease_p50_ms']:.1f}",
            f"{r['lease_p99_ms']:.1f}",
            f"{r['report_p50_ms']:.1f}",
            f"{r['report_p99_ms']:.1f}",
            f"{r['coordinator_cpu_ms_per_eval']:.2f}",
            f"{r['coordinator_cpu_percent']:.0f}",
        )
    Console(width=190).print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 and 8 trainers, 0.05 s evaluations")
    parser.add_argument("--trainers", type=int, nargs="+", help="trainer counts (default: 1 8 32 128)")
    parser.add_argument("--eval-s", type=float, help="seconds per evaluation (default: 1)")
    parser.add_argument("--duration", type=float, help="measurement window per configuration, s (default: 20)")
    parser.add_argument("--warmup", type=float, help="warm-up before the window, s (default: 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    parser.add_argument(
        "--work",
        type=float,
        nargs="+",
        metavar="X",
        help="queued work per generation round, as a multiple of the trainer count "
        "(several values: one row each; default: 4)",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the null-server baseline rows")
    parser.add_argument(
        "--other-checkout",
        type=Path,
        metavar="DIR",
        help="also run the coordinator and the trainers' worker loop from this source tree "
        "(e.g. an export of an older commit), for before/after rows in one run",
    )
    parser.add_argument(
        "--other-ref",
        metavar="COMMIT",
        help="like --other-checkout, with the tree of this git commit (exported to a temporary folder)",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="many waiting trainers: 64 512 2000 trainers, 10 s evaluations, 1x work, "
        "40 s windows after 10 s of warm-up, no null-server rows (each overridable)",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="only the waiting-trainers burst: N polls wait, a client reads, a generation of N "
        "appears, all report (--trainers, default 64 512 2000)",
    )
    parser.add_argument(
        "--scheduler-only",
        action="store_true",
        help="only time a lease and Scheduler.report in-process, with SQLite and without storage",
    )
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="only simulate the generation barrier: idle %% of 128 trainers under the real "
        "scheduler with a virtual clock and instant RPCs (--work values, default 1 2 4 8)",
    )
    parser.add_argument("--_trainer-process", dest="trainer_process", help=argparse.SUPPRESS)
    parser.add_argument("--_null-server", dest="null_server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.null_server:
        null_server(args.null_server)
        return 0
    if args.trainer_process:
        print(json.dumps(trainer_process(**json.loads(args.trainer_process))))
        return 0
    if args.simulate:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Generation barrier, simulated (128 trainers, 1 s evaluations, instant RPCs)")
        for column in ("work", "evaluation time", "idle %"):
            table.add_column(column, justify="right")
        for work in args.work or [1.0, 2.0, 4.0, 8.0]:
            for spread in (0.05, 0.6):
                idle = simulate_barrier(args.trainers[0] if args.trainers else 128, work, spread)
                table.add_row(f"{work:g}x", f"1 s +- {100 * spread:g} %", f"{idle:.1f}")
        Console(width=120).print(table)
        return 0
    if args.scheduler_only:
        rows = scheduler_cost()
        print_scheduler_table(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    if args.burst:
        rows = []
        with tempfile.TemporaryDirectory(prefix="taylorglo-bench-") as tmp:
            other, label = _other_tree(args, Path(tmp))
            for n in args.trainers or [64, 512, 2000]:
                for k, checkout in enumerate([REPO] + ([other] if other else [])):
                    workdir = Path(tmp) / f"burst-{n}-{k}"
                    workdir.mkdir()
                    rows.append(burst(n, workdir, checkout, label))
                    print(json.dumps(rows[-1]), file=sys.stderr)
        print_burst_table(rows)
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        return 0
    if args.scale:
        args.trainers = args.trainers or [64, 512, 2000]
        args.eval_s, args.duration = args.eval_s or 10.0, args.duration or 40.0
        args.warmup = 10.0 if args.warmup is None else args.warmup
        args.work, args.no_baseline = args.work or [1.0], True
    trainers = args.trainers or ([1, 8] if args.quick else [1, 8, 32, 128])
    eval_s = args.eval_s or (0.05 if args.quick else 1.0)
    duration = args.duration or (3.0 if args.quick else 20.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 3.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="taylorglo-bench-") as tmp:
        other, label = _other_tree(args, Path(tmp))
        for n in trainers:
            # Side by side: the same harness against the coordinator (and the other tree's) and the null server.
            checkouts = [REPO] + ([other] if other else [])
            configs = [("coordinator", w, c) for w in args.work or [4.0] for c in checkouts]
            configs += [] if args.no_baseline else [("null", 0.0, REPO)]
            for k, (server, work, checkout) in enumerate(configs):
                workdir = Path(tmp) / f"{server}-{work:g}-{n}-{k}"
                workdir.mkdir()
                rows.append(measure(server, n, eval_s, duration, warmup, workdir, work, checkout, label))
                print(
                    f"{rows[-1]['server']} (work {work:g}x), {n} trainers: "
                    f"{rows[-1]['percent_of_ideal']:.1f}% of ideal",
                    file=sys.stderr,
                )
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
