"""A coordinator killed (SIGKILL) in every generation, restarted in a fresh process each time,
searches exactly the same thetas as an uninterrupted one, bit for bit; with successive halving,
it also makes the same stop decisions (each life dies with the generation's results waiting
for the decision that its last candidate's report brings).

Each coordinator process gets its own PYTHONHASHSEED: Python's hash() of bytes
differs between processes, and nothing the search stores may depend on it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.coordinator.scheduler import Report
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.leasing import take_lease
from tests.helpers.scheduling import checkpoint_metrics, open_scheduler, synthetic_fitness

POPULATION, GENERATIONS, SEED = 4, 5, 3
ROOT = Path(__file__).resolve().parents[2]

# One coordinator life: resume from the database, take the report of the lease the
# previous life died with, report ``reports`` more results, lease one more candidate
# (in flight when it dies), print it, and wait to be killed.
DRIVER = r"""
import json, sys
import numpy as np
from taylorglo_tf.coordinator.scheduler import Report, Scheduler
from taylorglo_tf.coordinator.storage import SqliteStorage
from taylorglo_tf import spec as spec_lib
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.leasing import take_lease
from tests.helpers.scheduling import checkpoint_metrics as metrics, synthetic_fitness as fitness

path, reports, carried = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
spec = json.loads(sys.argv[4])

s = Scheduler(SqliteStorage(path), prescreen=lambda theta, n: True)
s.start(reaper=False)
if not s.list():
    s.submit(spec_lib.load_spec(spec))
def report(lease_id, theta):
    accepted = s.report(Report(lease_id, "t", ws.EVALUATION_STATUS_OK, fitness(theta), metrics(fitness(theta))))
    assert accepted[0], accepted

if carried:
    report(carried["lease_id"], carried["theta"])
for _ in range(reports):
    lease = take_lease(s, "t")
    if lease is None:
        break
    report(lease.lease_id, lease.theta)
lease = take_lease(s, "t")
exp = s.list()[0]
print(json.dumps({"state": exp.state, "generation": exp.generation,
                  "lease": {"lease_id": lease.lease_id, "theta": list(lease.theta)} if lease else None}), flush=True)
sys.stdin.read()  # the test kills this process here
"""

SPEC = {
    "task": {"dataset": "digits", "model": "tiny", "steps": 10},
    "search": {"population": POPULATION, "generations": GENERATIONS, "seed": SEED},
}


def drain_with_checkpoints(scheduler) -> None:
    while (lease := take_lease(scheduler, "t")) is not None:
        value = synthetic_fitness(lease.theta)
        report = Report(lease.lease_id, "t", ws.EVALUATION_STATUS_OK, value, checkpoint_metrics(value))
        assert scheduler.report(report)[0]


def live_once(db: Path, reports: int, carried, hash_seed: int, spec: dict) -> dict:
    """Run one coordinator life and SIGKILL it; returns what it printed."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONHASHSEED=str(hash_seed))
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(db), str(reports), json.dumps(carried), json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=ROOT,
    )
    try:
        line = process.stdout.readline()
        assert line, process.stderr.read().decode()
        return json.loads(line)
    finally:
        process.kill()  # SIGKILL: no orderly shutdown
        process.wait(30)


def candidates(scheduler, experiment_id):
    result = scheduler.result(experiment_id)
    return [
        (c.generation, c.index, np.array(c.theta).tobytes(), c.status, c.fitness, c.stopped_at)
        for c in result.candidates
    ]


@pytest.mark.parametrize("rule", ["none", "successive_halving"])
def test_a_kill_in_every_generation_gives_the_bitwise_identical_trajectory(tmp_path, rule):
    spec = {**SPEC, "search": {**SPEC["search"], "early_stopping": rule}}
    reference = open_scheduler(tmp_path / "reference.db")
    ref_exp = reference.submit(spec_lib.load_spec(spec))
    drain_with_checkpoints(reference)

    db = tmp_path / "killed.db"
    carried, killed_in = None, []
    for life in range(GENERATIONS + 1):
        # population - 1 reports per life, plus the carried one: every life dies with the
        # last candidate of a generation in flight, once in every generation
        seen = live_once(db, POPULATION - 1, carried, hash_seed=1000 + life, spec=spec)
        carried = seen["lease"]
        if carried is None:
            break
        killed_in.append(seen["generation"])
    assert killed_in == list(range(GENERATIONS))

    resumed = open_scheduler(db)
    [exp] = resumed.list()
    drain_with_checkpoints(resumed)
    assert resumed.get(exp.id).state == reference.get(ref_exp.id).state
    got, want = candidates(resumed, exp.id), candidates(reference, ref_exp.id)
    assert len(got) == POPULATION * GENERATIONS
    assert got == want  # every theta, status, fitness and stop decision of every generation, bit for bit
    stopped = sum(c.status == types_pb2.CANDIDATE_STATUS_STOPPED for c in resumed.result(exp.id).candidates)
    assert stopped == (0 if rule == "none" else (POPULATION - 1) * GENERATIONS)
    ref_gens = reference.result(ref_exp.id).generations
    assert [(g.sigma, tuple(g.mean_theta)) for g in resumed.result(exp.id).generations] == [
        (g.sigma, tuple(g.mean_theta)) for g in ref_gens
    ]
