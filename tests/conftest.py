"""Test-suite settings shared by every test module.

Set before anything imports TensorFlow: quiet logs, the TensorFlow backend for
Keras, the toolkit's TensorFlow defaults (as the ``taylorglo`` command sets
them), and a headless matplotlib.
"""

import os

import pytest

from taylorglo_tf import runtime

runtime.set_tensorflow_defaults()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def served(tmp_path):
    """An in-process coordinator on ``tmp_path/c.db``: ``(server, ExperimentService stub, WorkerService stub)``."""
    from taylorglo_tf.connection import connect
    from taylorglo_tf.coordinator.server import serve
    from taylorglo_tf.rpc import experiment_service_pb2_grpc, worker_service_pb2_grpc

    server = serve(tmp_path / "c.db", "127.0.0.1:0")
    channel = connect(server.address)
    yield (
        server,
        experiment_service_pb2_grpc.ExperimentServiceStub(channel),
        worker_service_pb2_grpc.WorkerServiceStub(channel),
    )
    channel.close()
    server.stop(grace=0)
