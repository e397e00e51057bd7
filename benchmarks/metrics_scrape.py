"""Lease latency with and without a Prometheus scraper: does ``/metrics`` slow the lease path?

A coordinator in this process (``serve``, real gRPC on loopback, ``--metrics-listen``
on in both arms) gets N waiting LeaseCandidate long polls from N trainers (grpc.aio
calls on a few channels); then an experiment of population N is submitted, and each
call's time from the start of the submission (which grants to waiting calls before
it returns) to its lease is measured. In the
"scraping" arm a thread fetches ``/metrics`` every 100 ms for the whole round.
Arms alternate, each round on a fresh coordinator and database; the table shows
the median over rounds of each round's p50 and p99.

    python benchmarks/metrics_scrape.py --waiting 512 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

# benchmarks/coordinator.py would shadow the coordinator package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

SCRAPE_EVERY_S = 0.1
CHANNELS = 8


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def _scraper(port: int, stop: threading.Event, scrapes: list[float]) -> None:
    while not stop.wait(SCRAPE_EVERY_S):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            response.read()
        scrapes.append(time.perf_counter() - started)


async def _round_async(address: str, waiting: int, submit) -> list[float]:
    import grpc

    from taylorglo_tf.rpc import worker_service_pb2 as ws
    from taylorglo_tf.rpc import worker_service_pb2_grpc

    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    stubs = [worker_service_pb2_grpc.WorkerServiceStub(c) for c in channels]
    submitted: list[float] = []
    latencies: list[float] = []

    async def trainer(i: int) -> None:
        request = ws.LeaseCandidateRequest(trainer_id=f"bench-{i}", wait_ms=30_000, max_candidates=1)
        response = await stubs[i % CHANNELS].LeaseCandidate(request, timeout=60)
        if response.leases:
            latencies.append(time.perf_counter() - submitted[0])

    tasks = [asyncio.create_task(trainer(i)) for i in range(waiting)]
    await asyncio.sleep(2.0)  # every call is waiting
    submitted.append(time.perf_counter())  # the submission grants to waiting calls before it returns
    await asyncio.to_thread(submit)
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    return latencies


def one_round(waiting: int, scraping: bool) -> dict:
    from taylorglo_tf import spec as spec_lib
    from taylorglo_tf.coordinator.server import serve

    with tempfile.TemporaryDirectory(prefix="taylorglo-scrape-") as tmp:
        server = serve(Path(tmp) / "bench.db", metrics_listen="127.0.0.1:0", lease_ttl_s=120)
        stop, scrapes = threading.Event(), []
        scraper = threading.Thread(target=_scraper, args=(server.metrics_port, stop, scrapes), daemon=True)
        if scraping:
            scraper.start()
        spec = spec_lib.load_spec(
            {
                "task": {"dataset": "digits", "model": "tiny", "steps": 10},
                "search": {"population": waiting, "generations": 1, "seed": 1, "invariant_prescreen": False},
            }
        )
        try:
            latencies = asyncio.run(_round_async(server.address, waiting, lambda: server.scheduler.submit(spec)))
        finally:
            stop.set()
            if scraping:
                scraper.join(5)
            server.stop(grace=0)
    return {
        "leases": len(latencies),
        "p50_ms": 1000 * _percentile(latencies, 50),
        "p99_ms": 1000 * _percentile(latencies, 99),
        "scrapes": len(scrapes),
        "scrape_p50_ms": 1000 * statistics.median(scrapes) if scrapes else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiting", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows: dict[bool, list[dict]] = {False: [], True: []}
    for _ in range(args.repeat):
        for scraping in (False, True):
            row = one_round(args.waiting, scraping)
            rows[scraping].append(row)
            print(f"scraping={scraping}: {row}", file=sys.stderr, flush=True)
    print(f"{'arm':<14} {'waiting':>7} {'leases':>6} {'p50 ms':>8} {'p99 ms':>8} {'scrapes':>7} {'scrape ms':>9}")
    for scraping, label in ((False, "no scraper"), (True, "scrape 100 ms")):

        def med(key: str, r: list[dict] = rows[scraping]) -> float:
            return statistics.median(x[key] for x in r)

        print(
            f"{label:<14} {args.waiting:>7} {med('leases'):>6.0f} {med('p50_ms'):>8.1f} {med('p99_ms'):>8.1f} "
            f"{med('scrapes'):>7.0f} {med('scrape_p50_ms'):>9.2f}"
        )


if __name__ == "__main__":
    main()
