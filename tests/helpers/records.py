"""Storage tests' records: an experiment and its candidates, with fields to change."""

import numpy as np

from taylorglo_tf.coordinator.model import CandidateRecord, ExperimentRecord
from taylorglo_tf.rpc import types_pb2


def experiment(exp_id="e1", **changes):
    spec = types_pb2.ExperimentSpec(
        name="s",
        task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=3),
        search=types_pb2.SearchSpec(population=2, generations=2),
    )
    fields = {
        "id": exp_id,
        "spec": spec,
        "state": types_pb2.EXPERIMENT_STATE_RUNNING,
        "create_time": 1.5,
        "update_time": 2.5,
        "es_state": b"strategy-0",
    }
    fields.update(changes)
    return ExperimentRecord(**fields)


def candidates(exp_id="e1", generation=0, n=2):
    rng = np.random.default_rng(generation)
    return [CandidateRecord(exp_id, generation, i, rng.standard_normal(8), create_time=3.0) for i in range(n)]
