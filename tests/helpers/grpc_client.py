"""A test client of the coordinator over gRPC: submit a spec, train with the synthetic fitness, read results."""

from taylorglo_tf.connection import connect
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2
from taylorglo_tf.rpc import worker_service_pb2 as ws
from taylorglo_tf.rpc import worker_service_pb2_grpc as ws_grpc
from tests.helpers.scheduling import synthetic_fitness


def spec_proto(**search):
    spec = types_pb2.ExperimentSpec(task=types_pb2.TaskSpec(dataset="digits", model="tiny", steps=10))
    spec.search.population, spec.search.generations = 4, 2
    for key, value in search.items():
        setattr(spec.search, key, value)
    return spec


class Client:
    def __init__(self, address, token=None):
        self.channel = connect(address, token=token)
        self.experiments = es_grpc.ExperimentServiceStub(self.channel)
        self.worker = ws_grpc.WorkerServiceStub(self.channel)

    def submit(self, **search):
        return self.experiments.SubmitExperiment(es.SubmitExperimentRequest(spec=spec_proto(**search)), timeout=10)

    def train(self, trainer_id="t", limit=None):
        """Lease, score with the synthetic fitness and report until no work comes; returns reports made."""
        done = 0
        while limit is None or done < limit:
            response = self.worker.LeaseCandidate(
                ws.LeaseCandidateRequest(trainer_id=trainer_id, wait_ms=100), timeout=10
            )
            if not response.HasField("lease"):
                break
            lease = response.lease
            ack = self.worker.ReportResult(
                ws.ReportResultRequest(
                    lease_id=lease.lease_id,
                    trainer_id=trainer_id,
                    status=ws.EVALUATION_STATUS_OK,
                    fitness=synthetic_fitness(lease.theta),
                    metrics=types_pb2.EvaluationMetrics(val_accuracy=synthetic_fitness(lease.theta), steps=10),
                ),
                timeout=10,
            )
            assert ack.accepted, ack.reason
            done += 1
        return done

    def result(self, experiment_id):
        return self.experiments.GetResult(es.GetResultRequest(experiment_id=experiment_id), timeout=10)
