"""Trainer tests' leases of the tiny digits task, and a heartbeat that records progress and can say stop."""

from taylorglo_tf import taylor
from taylorglo_tf.rpc import types_pb2, worker_service_pb2

APPENDIX_C_THETA = list(taylor.PAPER_MNIST_THETA)


STEPS = 40


def lease(theta=APPENDIX_C_THETA, *, dataset="digits", steps=STEPS, index=0, **task_fields):
    return worker_service_pb2.Lease(
        lease_id=f"lease-{index}",
        experiment_id="exp",
        generation=0,
        index=index,
        theta=theta,
        task=types_pb2.TaskSpec(dataset=dataset, model="tiny", steps=steps, seed=3, **task_fields),
        loss=types_pb2.LossSpec(),
        attempt=1,
        ttl_s=30,
    )


class RecordingHeartbeat:
    """A worker heartbeat that records steps and says stop after ``stop_after`` steps."""

    def __init__(self, stop_after=None):
        self.steps = []
        self.stop_after = stop_after

    def __call__(self, steps_done):
        self.steps.append(steps_done)
        return self.stop_after is None or steps_done < self.stop_after
