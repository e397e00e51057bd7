"""A search whose trainers cannot run the task fails, naming the error, instead of "succeeding" with nothing."""

from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from tests.helpers.leasing import take_lease
from tests.helpers.scheduling import make_spec, open_scheduler, report

ERROR = ws.EVALUATION_STATUS_ERROR
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "keras_evaluator.py", line 90, in _resolve_dataset\n'
    "    raise FileNotFoundError(...)\n"
    "FileNotFoundError: npz file /data/nothere.npz not found\n"
)


def fail_every_lease(scheduler, error=TRACEBACK):
    while (lease := take_lease(scheduler, "t")) is not None:
        assert report(scheduler, lease, status=ERROR, error=error) == (True, "")


def test_a_generation_in_which_every_candidate_failed_fails_the_experiment_with_the_error(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    exp = s.submit(make_spec(population=3, generations=4, max_attempts=2))
    fail_every_lease(s)
    record = s.get(exp.id)
    assert record.state == types_pb2.EXPERIMENT_STATE_FAILED
    assert record.generation == 0  # stopped at once, no more generations of zeros
    assert "generation 0" in record.error and "3 of 3" in record.error
    assert record.error.endswith("FileNotFoundError: npz file /data/nothere.npz not found")
    assert record.evaluations_done == 3


def test_a_failed_experiment_has_no_best_theta_and_its_status_survives_a_restart(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    exp = s.submit(make_spec(population=2, generations=2, max_attempts=1))
    fail_every_lease(s, error="lease expired")
    result = s.result(exp.id)
    assert len(result.best_theta) == 0 and result.best_fitness == 0.0
    s._storage.close()
    record = open_scheduler(tmp_path / "c.db").get(exp.id)
    assert record.state == types_pb2.EXPERIMENT_STATE_FAILED
    assert record.error.endswith("first error: lease expired (attempt 1 of 1)")


def test_one_trained_candidate_keeps_the_search_going_and_only_it_can_be_the_best(tmp_path):
    s = open_scheduler(tmp_path / "c.db")
    exp = s.submit(make_spec(population=3, generations=1, max_attempts=1))
    leases = [take_lease(s, "t") for _ in range(3)]
    report(s, leases[0], status=ERROR, error=TRACEBACK)
    report(s, leases[1], fitness=0.0)  # trained, scored 0: still a real result
    report(s, leases[2], status=ws.EVALUATION_STATUS_DIVERGED)
    result = s.result(exp.id)
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED
    assert list(result.best_theta) == list(leases[1].theta)


def test_a_search_whose_every_candidate_failed_the_prescreen_fails_as_nothing_was_trained(tmp_path):
    s = open_scheduler(tmp_path / "c.db", prescreen=lambda theta, n: False)
    exp = s.submit(make_spec(population=4, generations=2, invariant_prescreen=True))
    assert take_lease(s, "t") is None
    record = s.get(exp.id)
    assert record.state == types_pb2.EXPERIMENT_STATE_FAILED
    assert record.error == (
        "every candidate of every generation failed the invariant pre-screen "
        "(8 candidates in 2 generations); nothing was trained"
    )
    assert record.evaluations_done == 8 and len(record.best_theta) == 0


def test_a_generation_all_rejected_by_the_prescreen_among_trained_ones_is_a_search_result(tmp_path):
    screened = []

    def reject_generation_0(theta, num_classes):  # called once per candidate, generation by generation
        screened.append(theta)
        return len(screened) > 4

    s = open_scheduler(tmp_path / "c.db", prescreen=reject_generation_0)
    exp = s.submit(make_spec(population=4, generations=2, invariant_prescreen=True))
    leases = [take_lease(s, "t") for _ in range(4)]
    assert {lease.generation for lease in leases} == {1}  # generation 0 was told its worst fitness at once
    for k, lease in enumerate(leases):
        report(s, lease, fitness=0.1 * (k + 1))
    result = s.result(exp.id)
    assert result.experiment.state == types_pb2.EXPERIMENT_STATE_SUCCEEDED and result.experiment.error == ""
    assert [c.status for c in result.candidates[:4]] == [types_pb2.CANDIDATE_STATUS_INVALID] * 4
    assert list(result.best_theta) == list(leases[3].theta)
