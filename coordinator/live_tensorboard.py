"""Live TensorBoard runs of every experiment, written as results arrive (``--tensorboard-dir``).

Layout under the directory, one folder per experiment (its id, made safe as a name)::

    <experiment>/events.out.tfevents.*            generation/best_fitness, mean_fitness, sigma,
                                                  stopped, training_steps
                                                  (step = generation), the HParams experiment,
                                                  and loss_shape/best: each generation's best loss
                                                  in the paper's binary view (a PNG; needs matplotlib)
    <experiment>/g0003_c007/events.out.tfevents.* one HParams trial per finished candidate:
                                                  theta_00.., generation and status (its name:
                                                  succeeded, stopped, ...) as hyperparameters;
                                                  candidate/fitness, val_accuracy, val_loss, steps,
                                                  status and stopped_at as metrics

Early stopping: a stopped candidate's trial has status ``stopped`` and its metrics where it
stopped (its partial val_accuracy, the steps it trained, stopped_at: the 1-based checkpoint).
A generation's ``stopped`` and ``training_steps`` count the candidates finished while this
writer ran (a coordinator restarted mid-generation counts those after the restart); its
best_fitness is never a stopped candidate's (a generation whose candidates all stopped has none)
and mean_fitness (the coordinator's) leaves the stopped out: their fitness is a ranking score in
[-1, 0], not an accuracy.

No TensorFlow: the events are the ``tensorboard`` package's protos written with
its ``RecordWriter`` (:class:`taylorglo_tf.event_file.EventFile`), and the HParams
summaries are built from ``tensorboard.plugins.hparams``' protos and metadata
(its ``summary`` module imports TensorFlow, so it is not used). The scheduler hands
each event over under its lock; a thread of this module does the writing.
"""

from __future__ import annotations

import io
import logging
import math
import os
import queue
import re
import socket
import threading
import time
from pathlib import Path
from typing import Any

from taylorglo_tf import spec as spec_lib
from taylorglo_tf.rpc import experiment_service_pb2 as es_pb2
from taylorglo_tf.rpc import types_pb2

from .scheduler import Scheduler

log = logging.getLogger(__name__)

ProgressEvent = es_pb2.ProgressEvent
# the metrics of each candidate trial, as the HParams dashboard lists them
CANDIDATE_METRICS = (
    "candidate/fitness",
    "candidate/val_accuracy",
    "candidate/val_loss",
    "candidate/steps",
    "candidate/status",
    "candidate/stopped_at",
)
# the candidate statuses by name ("stopped"), the trials' status hyperparameter
STATUS_NAMES = {
    value: name.removeprefix("CANDIDATE_STATUS_").lower()
    for name, value in types_pb2.CandidateStatus.items()
    if value != types_pb2.CANDIDATE_STATUS_UNSPECIFIED
}
# a trial ends SUCCESS when the candidate has a value the search ranks it by: trained in full, or
# stopped early by the rule with its partial accuracy (not a failure: the search chose to stop it)
_SUCCESS = frozenset({types_pb2.CANDIDATE_STATUS_SUCCEEDED, types_pb2.CANDIDATE_STATUS_STOPPED})
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_STOP = object()


def run_name(experiment_id: str) -> str:
    """A folder name for an experiment id: characters other than letters, digits, ``._-`` become ``_``."""
    name = _UNSAFE.sub("_", experiment_id)
    return name if name.strip(".") else f"_{name}"


def _event_file_name() -> str:
    # "tfevents" in the name is how TensorBoard finds event files
    return f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"


class _Run:
    """One experiment's folder and its main event file."""

    def __init__(self, folder: Path, experiment: types_pb2.Experiment):
        from taylorglo_tf.event_file import EventFile

        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.theta_length = len(experiment.best_theta) or _theta_length(experiment)
        self.file = EventFile(open(folder / _event_file_name(), "wb"), wall_time=time.time())  # noqa: SIM115
        self.file.write(_event(_hparams_experiment(self.theta_length)))
        # per generation, from its candidates' events: the stopped count and the steps trained
        self.generations: dict[int, _GenerationCounts] = {}


class _GenerationCounts:
    def __init__(self) -> None:
        self.stopped = 0
        self.steps = 0

    def add(self, c: types_pb2.Candidate) -> None:
        self.steps += c.metrics.steps
        self.stopped += c.status == types_pb2.CANDIDATE_STATUS_STOPPED


def _theta_length(experiment: types_pb2.Experiment) -> int:
    return spec_lib.theta_length(experiment.spec.loss)


def _event(summary: Any, step: int = 0) -> Any:
    from tensorboard.compat.proto import event_pb2

    return event_pb2.Event(wall_time=time.time(), step=step, summary=summary)


def _hparams_summary(tag: str, plugin_data: Any) -> Any:
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(plugin_data), tensor=metadata.NULL_TENSOR)
    return summary


def _hparams_experiment(theta_length: int) -> Any:
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    experiment = api_pb2.Experiment(
        hparam_infos=[
            api_pb2.HParamInfo(name=f"theta_{i:02d}", type=api_pb2.DATA_TYPE_FLOAT64) for i in range(theta_length)
        ]
        + [api_pb2.HParamInfo(name="generation", type=api_pb2.DATA_TYPE_FLOAT64)]
        + [_status_info()],
        metric_infos=[api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag)) for tag in CANDIDATE_METRICS],
    )
    return _hparams_summary(
        metadata.EXPERIMENT_TAG,
        plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, experiment=experiment),
    )


def _status_info() -> Any:
    """The ``status`` hyperparameter: a string from the candidate statuses' names."""
    from google.protobuf import struct_pb2
    from tensorboard.plugins.hparams import api_pb2

    domain = struct_pb2.ListValue(values=[struct_pb2.Value(string_value=name) for name in STATUS_NAMES.values()])
    return api_pb2.HParamInfo(name="status", type=api_pb2.DATA_TYPE_STRING, domain_discrete=domain)


def _scalars(values: dict[str, float]) -> Any:
    from tensorboard.compat.proto import summary_pb2

    return summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value) for tag, value in values.items()]
    )


class LiveTensorBoard:
    """Subscribes to ``scheduler``'s events and writes them under ``log_dir`` in a thread of its own."""

    def __init__(self, log_dir: str | os.PathLike[str], scheduler: Scheduler):
        try:  # the event protos: a missing package is named before anything starts
            import tensorboard.compat.proto.event_pb2  # noqa: F401
        except ModuleNotFoundError as error:
            # the [train] extra would bring TensorFlow too; the package alone is enough here
            raise ModuleNotFoundError(
                "--tensorboard-dir needs the tensorboard package (no TensorFlow): pip install tensorboard",
                name=error.name,
            ) from error
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._runs: dict[str, _Run] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._images = True
        self._thread = threading.Thread(target=self._write_all, name="live-tensorboard", daemon=True)
        self._thread.start()
        scheduler.listen(self._queue.put)

    def close(self, timeout: float = 10.0) -> None:
        """Write the events still queued, then close every file."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _write_all(self) -> None:
        while True:
            event = self._queue.get()
            if event is _STOP:
                break
            try:
                self._write(event)
                while True:  # a burst (a generation's end) is written before one flush
                    try:
                        event = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if event is _STOP:
                        self._close_runs()
                        return
                    self._write(event)
                for run in self._runs.values():
                    run.file.flush()
            except Exception:  # a full disk must not stop the search; the next event tries again
                log.exception("writing TensorBoard events under %s failed", self.log_dir)
        self._close_runs()

    def _close_runs(self) -> None:
        for run in self._runs.values():
            run.file.close()
        self._runs.clear()

    def _run(self, experiment: types_pb2.Experiment) -> _Run:
        run = self._runs.get(experiment.id)
        if run is None:
            run = self._runs[experiment.id] = _Run(self.log_dir / run_name(experiment.id), experiment)
        return run

    def _write(self, event: Any) -> None:
        if event.kind == ProgressEvent.KIND_CANDIDATE_FINISHED:
            self._candidate(self._run(event.experiment), event.candidate)
        elif event.kind == ProgressEvent.KIND_GENERATION_FINISHED:
            self._generation(self._run(event.experiment), event.experiment, event.generation)
        elif event.kind == ProgressEvent.KIND_EXPERIMENT_FINISHED:
            run = self._runs.pop(event.experiment.id, None)
            if run is not None:
                run.file.close()

    def _candidate(self, run: _Run, c: types_pb2.Candidate) -> None:
        """One HParams trial: session start (theta), its metrics, session end."""
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        from taylorglo_tf.event_file import EventFile

        folder = run.folder / f"g{c.generation:04d}_c{c.index:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        trial = EventFile(open(folder / _event_file_name(), "wb"), wall_time=time.time())  # noqa: SIM115
        try:
            start = plugin_data_pb2.SessionStartInfo(group_name=folder.name, start_time_secs=time.time())
            for i, value in enumerate(c.theta):
                start.hparams[f"theta_{i:02d}"].number_value = value
            start.hparams["generation"].number_value = c.generation
            start.hparams["status"].string_value = STATUS_NAMES.get(c.status, str(c.status))
            trial.write(
                _event(
                    _hparams_summary(
                        metadata.SESSION_START_INFO_TAG,
                        plugin_data_pb2.HParamsPluginData(
                            version=metadata.PLUGIN_DATA_VERSION, session_start_info=start
                        ),
                    )
                )
            )
            val_loss = c.metrics.val_loss if c.HasField("metrics") else math.nan
            values = {
                "candidate/fitness": c.fitness,
                # a stopped candidate's: its partial accuracy where it stopped
                "candidate/val_accuracy": c.metrics.val_accuracy if c.HasField("metrics") else math.nan,
                "candidate/val_loss": val_loss,
                "candidate/steps": float(c.metrics.steps),  # a stopped candidate's: the steps it trained
                "candidate/status": float(c.status),
                "candidate/stopped_at": float(c.stopped_at),
            }
            trial.write(_event(_scalars(values), step=c.generation))
            run.generations.setdefault(c.generation, _GenerationCounts()).add(c)
            end = plugin_data_pb2.SessionEndInfo(
                status=api_pb2.STATUS_SUCCESS if c.status in _SUCCESS else api_pb2.STATUS_FAILURE,
                end_time_secs=time.time(),
            )
            trial.write(
                _event(
                    _hparams_summary(
                        metadata.SESSION_END_INFO_TAG,
                        plugin_data_pb2.HParamsPluginData(version=metadata.PLUGIN_DATA_VERSION, session_end_info=end),
                    )
                )
            )
        finally:
            trial.close()

    def _generation(self, run: _Run, experiment: types_pb2.Experiment, g: types_pb2.GenerationSummary) -> None:
        counts = run.generations.pop(g.generation, _GenerationCounts())
        values = {"generation/mean_fitness": g.mean_fitness}
        # Every candidate not stopped has a fitness >= 0 and every stopped one <= 0: the generation's
        # best is a stopped one's only when all were stopped, and then there is no best to show.
        if g.best_fitness >= 0 or not counts.stopped:
            values["generation/best_fitness"] = g.best_fitness
        values["generation/sigma"] = g.sigma
        values["generation/stopped"] = float(counts.stopped)
        values["generation/training_steps"] = float(counts.steps)
        values["experiment/best_fitness"] = experiment.best_fitness  # from succeeded candidates only
        run.file.write(_event(_scalars(values), step=g.generation))
        if self._images and len(g.best_theta):
            png = self._loss_png(experiment, list(g.best_theta), g.generation)
            if png is not None:
                run.file.write(_event(_image("loss_shape/best", png), step=g.generation))

    def _loss_png(self, experiment: types_pb2.Experiment, theta: list[float], generation: int) -> bytes | None:
        """The binary view of ``theta`` as a PNG, or None without matplotlib (the coordinator image)."""
        try:
            from matplotlib.figure import Figure

            from taylorglo_tf import plotting, taylor
        except ImportError:
            log.info("matplotlib is not installed: TensorBoard gets no loss-shape images")
            self._images = False
            return None
        order, inputs = spec_lib.loss_form(experiment.spec.loss)
        figure = Figure(figsize=(4, 3), dpi=80)
        ax = figure.add_subplot()
        plotting.plot_losses(
            ax, {f"best of generation {generation}": taylor.keras_config(theta, order, inputs)}, legend=True
        )
        figure.tight_layout()  # the axis labels inside the 320x240 image
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()


def _image(tag: str, png: bytes) -> Any:
    from tensorboard.compat.proto import summary_pb2

    image = summary_pb2.Summary.Image(encoded_image_string=png, height=240, width=320, colorspace=4)
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, image=image)])
