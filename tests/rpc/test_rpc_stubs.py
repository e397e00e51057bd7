"""The committed gRPC stubs match protos/ and import under taylorglo_tf.rpc."""

import shutil
import subprocess
import sys

import pytest

pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) regenerates the stubs")

from taylorglo_tf.rpc import generate


def test_committed_stubs_are_identical_to_freshly_generated_ones():
    stale = generate.stale_files(generate.render())
    assert stale == [], f"stale stubs {stale}: run `python -m taylorglo_tf.rpc.generate` and commit"


def test_a_changed_proto_makes_the_stubs_stale(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(generate.PROTO_ROOT, protos)
    types_proto = protos / "taylorglo" / "v1" / "types.proto"
    types_proto.write_text(types_proto.read_text() + "\nmessage AddedForTheTest { int32 x = 1; }\n")
    assert "types_pb2.py" in generate.stale_files(generate.render(protos))


def test_stubs_import_from_the_package_without_tensorflow():
    code = (
        "import sys\n"
        "from taylorglo_tf.rpc import types_pb2, experiment_service_pb2, experiment_service_pb2_grpc,"
        " worker_service_pb2, worker_service_pb2_grpc\n"
        "assert worker_service_pb2.Lease(task=types_pb2.TaskSpec(steps=5)).task.steps == 5\n"
        "assert hasattr(experiment_service_pb2_grpc, 'ExperimentServiceStub')\n"
        "assert hasattr(worker_service_pb2_grpc, 'WorkerServiceServicer')\n"
        "assert 'tensorflow' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_descriptors_keep_the_canonical_proto_file_names():
    from taylorglo_tf.rpc import worker_service_pb2

    assert worker_service_pb2.DESCRIPTOR.name == "taylorglo/v1/worker_service.proto"
    assert worker_service_pb2.DESCRIPTOR.package == "taylorglo.v1"
