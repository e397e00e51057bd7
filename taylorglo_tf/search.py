"""``LossSearch``: a TaylorGLO loss search for a user's own Keras model and data, from a script.

KerasTuner's shape::

    search = taylorglo_tf.LossSearch(build_model, optimizer=lambda: keras.optimizers.SGD(0.05),
                                     steps=300, batch_size=32, population=8, generations=6,
                                     directory="results/wine")
    search.search(x_train, y_train, validation_data=(x_val, y_val))
    loss = search.best_loss()                 # a TaylorGLOLoss for model.compile
    search.compare(x_test, y_test, runs=10)   # the tuned comparison `taylorglo run` prints

What runs where: the model, optimizer factory and data are registered in this
process under ``task.model == task.dataset == "script:NAME"``
(``training.sources.register``; ``NAME`` is ``name=``, default the directory's
name). Nothing but that name goes over the wire.

- **One machine** (no ``TAYLORGLO_COORDINATOR``): a coordinator in this process
  (the production server, ``coordinator.server.serve``, on 127.0.0.1 port 0,
  with fresh tokens), its database at ``directory/search.db``, and an in-process
  trainer (``trainer.worker.Worker`` with ``KerasEvaluator``) that leases the
  candidates of this experiment only. Re-running the script with the same
  ``directory`` finds the experiment again by name in that database and goes on
  from where it stopped (the coordinator stores candidates before it hands them
  out, so the candidates are those of an uninterrupted search); a finished one
  is not trained again. ``overwrite=True`` deletes the database and starts again.
- **Many machines**: every copy of the script gets ``TAYLORGLO_COORDINATOR``
  (``HOST:PORT``), ``TAYLORGLO_TOKEN`` (a coordinator started with the same token
  for both roles, or ``TAYLORGLO_TRAINER_TOKEN`` for the trainer role) and, for
  TLS, ``TAYLORGLO_TLS_CA`` (and ``TAYLORGLO_TLS_SERVER_NAME``). The copy with
  ``TAYLORGLO_ROLE=chief`` submits the experiment or finds it again by name;
  copies with another role wait for it (up to ``find_timeout_s``). Without any
  role, every copy looks for a live experiment of that name and submits one if
  there is none; if two submitted at once, the first submitted wins and the
  others cancel theirs (none of their candidates has been trained: a script's
  experiment is leased only by trainers that name it). Each copy trains
  candidates of that experiment only; a generic ``taylorglo trainer`` never
  leases them (see ``coordinator.dispatch.serves``).

The result folder in ``directory`` is the one ``taylorglo run`` writes
(``taylorglo_tf.results``: ``candidates.csv``, ``best_loss.json``, plots,
TensorBoard), and :meth:`LossSearch.compare` writes the comparison beside it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from taylorglo_tf.commands.arguments import ADDRESS_ENV
from taylorglo_tf.commands.coordinator import TRAINER_TOKEN_ENV  # the trainer role's token, where it differs
from taylorglo_tf.commands.run import TRAINER_GRACE_S  # at the end, a candidate finishes within it, else goes back
from taylorglo_tf.compare import DEFAULT_TUNING_SEEDS
from taylorglo_tf.connection import TOKEN_ENV
from taylorglo_tf.limits import MAX_LEASE_CANDIDATES, MAX_NAME_CHARS, SCRIPT_MODEL_PREFIX

__all__ = ["LossSearch"]

log = logging.getLogger(__name__)

TLS_CA_ENV = "TAYLORGLO_TLS_CA"
TLS_SERVER_NAME_ENV = "TAYLORGLO_TLS_SERVER_NAME"
ROLE_ENV = "TAYLORGLO_ROLE"
CHIEF = "chief"

DB_NAME = "search.db"
# A lease of a script killed mid-candidate comes back this long after the script is
# re-run (its trainer is gone); the in-process trainer heartbeats at a third of it.
LOCAL_LEASE_TTL_S = 10.0
TRAINER_WAIT_MS = 2000  # the in-process trainer's lease long poll
FIND_TIMEOUT_S = 600.0  # how long a copy that is not the chief waits for the chief's experiment
FIND_POLL_S = 1.0

_LIVE_OR_DONE = ("EXPERIMENT_STATE_PENDING", "EXPERIMENT_STATE_RUNNING", "EXPERIMENT_STATE_SUCCEEDED")


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def _search_name(directory: Path, name: str | None) -> str:
    text = name if name is not None else directory.resolve().name
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_NAME_CHARS or not text.isprintable():
        raise ValueError(f"name must be 1..{MAX_NAME_CHARS} printable characters, got {text!r}")
    return text


class LossSearch:
    """A loss search for ``build_model``'s model on data given to :meth:`search` (see the module).

    Args:
        build_model: a zero-argument function returning a fresh, uncompiled
            ``keras.Model`` whose output is one probability per class (or one logit
            per class with ``from_logits=True``; one sigmoid unit is two classes),
            or a ``keras.Model`` to copy (``training.sources.register``).
        optimizer: a zero-argument factory returning a *new* Keras optimizer per call.
        steps: training steps of each candidate (partial training).
        batch_size: training batch size.
        population: CMA-ES population size (>= 2): candidates per generation.
        generations: how many generations the search runs.
        directory: the result folder (and, on one machine, the search's database).
        overwrite: start again rather than resume the search found in ``directory``.
        name: the experiment's name, the same in every copy of the script
            (default: the directory's name).
        from_logits: the model outputs logits, not probabilities.
        seed: the training seed of every candidate.
        search_seed: CMA-ES's seed.
        order: the loss's Taylor order (None: the spec default, 3).
        inputs: the loss's inputs (None: the spec default, ``("x", "y")``).
        sigma0: CMA-ES's initial step size (None: the spec default).
        early_stopping: ``"none"``, ``"successive_halving"`` or ``"median"``: stop hopeless
            candidates at 1/5 and 2/5 of their steps (None: the spec default,
            ``taylorglo_tf.spec.DEFAULT_EARLY_STOPPING``). Successive halving saves most
            with ``candidates_per_step >= population``: a whole generation reaches each
            checkpoint together.
        candidates_per_step: candidates trained together per step (population batching).
        compare_steps: training steps of each comparison run (default ``steps``).
        out: where the progress bar and messages go (default stdout).
    """

    def __init__(
        self,
        build_model: Any,
        *,
        optimizer: Callable[[], Any],
        steps: int,
        batch_size: int,
        population: int,
        generations: int,
        directory: str | os.PathLike[str],
        overwrite: bool = False,
        name: str | None = None,
        from_logits: bool = False,
        seed: int = 0,
        search_seed: int = 1,
        order: int | None = None,
        inputs: tuple[str, ...] | None = None,
        sigma0: float | None = None,
        early_stopping: str | None = None,
        candidates_per_step: int = 4,
        compare_steps: int | None = None,
        out: TextIO | None = None,
    ) -> None:
        if not callable(optimizer):
            raise ValueError(f"optimizer must be a function returning a new Keras optimizer, got {optimizer!r}")
        self.steps = _positive_int(steps, "steps")
        self.batch_size = _positive_int(batch_size, "batch_size")
        self.population = _positive_int(population, "population")
        self.generations = _positive_int(generations, "generations")
        if not 1 <= _positive_int(candidates_per_step, "candidates_per_step") <= MAX_LEASE_CANDIDATES:
            raise ValueError(f"candidates_per_step must be in 1..{MAX_LEASE_CANDIDATES}, got {candidates_per_step}")
        self.candidates_per_step = candidates_per_step
        self.compare_steps = self.steps if compare_steps is None else _positive_int(compare_steps, "compare_steps")
        self.directory = Path(directory)
        self.name = _search_name(self.directory, name)
        self.model_name = SCRIPT_MODEL_PREFIX + self.name
        self.overwrite = bool(overwrite)
        self.from_logits = bool(from_logits)
        self._build_model = build_model
        self._optimizer = optimizer
        self._out = out
        self._loss: dict[str, Any] = {"order": order, "inputs": list(inputs) if inputs is not None else None}
        self._search: dict[str, Any] = {"sigma0": sigma0, "seed": search_seed, "early_stopping": early_stopping}
        self._seed = seed
        self._data: dict[str, Any] | None = None  # train/validation as given to search()
        self.spec = self._make_spec()  # validated now: a bad value fails before any training
        self.experiment_id: str | None = None
        # The chief: on one machine, or with TAYLORGLO_ROLE=chief; without roles, the copy that submitted
        self.is_chief = True

    # -- public ------------------------------------------------------------------------

    def search(self, x: Any, y: Any = None, *, validation_data: Any) -> LossSearch:
        """Search a loss for the model on ``(x, y)``, fitness = accuracy on ``validation_data``.

        ``x``/``y``: arrays (``y`` sparse integer labels or one-hot rows), or ``x`` a
        ``tf.data.Dataset`` of ``(x, y)`` batches and ``y`` None; ``validation_data``
        likewise a pair or a dataset. Bad data or a bad model raise ``ValueError``
        naming the value before any training. Returns ``self``; the result folder is
        in ``directory`` when it returns.
        """
        if validation_data is None:
            raise ValueError("validation_data is required: fitness is the accuracy on the validation split")
        train = x if y is None else (x, y)
        self._data = {"train": train, "validation": validation_data}
        self._register()
        self.directory.mkdir(parents=True, exist_ok=True)
        address = os.environ.get(ADDRESS_ENV, "").strip()
        if self.overwrite and not address:
            self._clear_directory()
        with self._coordinator(address) as (client_channel, trainer_channel):
            from taylorglo_tf.rpc import experiment_service_pb2_grpc

            stub = experiment_service_pb2_grpc.ExperimentServiceStub(client_channel)
            experiment = self._experiment(stub, remote=bool(address))
            self.experiment_id = experiment.id
            self._train_while_watching(stub, trainer_channel, experiment)
            self._write_result(stub)
        return self

    def best_loss(self) -> Any:
        """The best loss found, a ``TaylorGLOLoss`` (from ``directory/best_loss.json``)."""
        from taylorglo_tf import losses

        path = self.directory / "best_loss.json"
        if not path.exists():
            raise FileNotFoundError(
                f"no best loss in {str(self.directory)!r}: run search() first (or no candidate trained successfully)"
            )
        return losses.load_json(path)

    def compare(self, x: Any, y: Any = None, *, runs: int = 10, tune_baseline_lr: bool = True) -> Any:
        """Train the best loss and cross-entropy ``runs`` times each on the training data, test on ``(x, y)``.

        The comparison ``taylorglo run`` prints: cross-entropy at its best learning
        rate multiplier (chosen on the validation split, unless ``tune_baseline_lr``
        is False) and a Welch t-test; written to ``directory/comparison.json``/``.txt``
        and printed. Returns the comparison (``taylorglo_tf.compare``).
        """
        if _positive_int(runs, "runs") < 2:
            raise ValueError(f"runs must be >= 2 for a t-test, got {runs}")
        if self._data is None:
            raise RuntimeError("compare() needs the training data: call search() first, in this process")
        best = self.directory / "best_loss.json"
        self.best_loss()  # a clear error when there is none
        self._register(test=x if y is None else (x, y))
        from taylorglo_tf.commands.run import compare_with_cross_entropy
        from taylorglo_tf.results import COMPARISON_TEXT, write_comparison

        comparison = compare_with_cross_entropy(
            best,
            self.spec,
            runs,
            steps=self.compare_steps,
            out=self._stream,
            tuning_seeds=DEFAULT_TUNING_SEEDS if tune_baseline_lr else 0,
        )
        write_comparison(comparison, self.directory)
        self._stream.write((self.directory / COMPARISON_TEXT).read_text())
        return comparison

    # -- steps -------------------------------------------------------------------------

    @property
    def _stream(self) -> TextIO:
        return self._out if self._out is not None else sys.stdout

    def _print(self, text: str) -> None:
        print(text, file=self._stream, flush=True)

    def _make_spec(self) -> Any:
        from taylorglo_tf import spec as spec_module

        loss = {k: v for k, v in self._loss.items() if v is not None}
        search = {"population": self.population, "generations": self.generations}
        search.update({k: v for k, v in self._search.items() if v is not None})
        return spec_module.load_spec(
            {
                "name": self.name,
                "task": {
                    "dataset": self.model_name,
                    "model": self.model_name,
                    "steps": self.steps,
                    "batch_size": self.batch_size,
                    "seed": self._seed,
                },
                "loss": loss,
                "search": search,
            }
        )

    def _register(self, test: Any = None) -> None:
        from taylorglo_tf.training import sources

        assert self._data is not None
        sources.register(
            self.model_name,
            self._build_model,
            self._optimizer,
            train=self._data["train"],
            validation=self._data["validation"],
            test=test,
            from_logits=self.from_logits,
        )

    def _clear_directory(self) -> None:
        """overwrite=True: the database (and its -wal/-shm/.lock files) and the result folder's files go."""
        from taylorglo_tf import results

        for path in self.directory.glob(DB_NAME + "*"):
            path.unlink()
        for name in (
            *(results.BEST_THETA, results.BEST_LOSS, results.CANDIDATES, results.HISTORY, results.EXPERIMENT),
            *(results.FITNESS_PLOT, results.LOSS_SHAPES_PLOT, results.COMPARISON_JSON, results.COMPARISON_TEXT),
        ):
            (self.directory / name).unlink(missing_ok=True)
        shutil.rmtree(self.directory / results.TENSORBOARD_DIR, ignore_errors=True)

    @contextlib.contextmanager
    def _coordinator(self, address: str) -> Iterator[tuple[Any, Any]]:
        """(client channel, trainer channel): to ``address``, or to a coordinator started here."""
        from taylorglo_tf import connection

        if address:
            client_token = connection.load_token(env=TOKEN_ENV)
            trainer_token = connection.load_token(env=TRAINER_TOKEN_ENV) or client_token
            tls = {
                "tls_ca": os.environ.get(TLS_CA_ENV) or None,
                "tls_server_name": os.environ.get(TLS_SERVER_NAME_ENV) or None,
            }
            with (
                connection.connect(address, token=client_token, **tls) as client,
                connection.connect(address, token=trainer_token, **tls) as trainer,
            ):
                yield client, trainer
            return
        from taylorglo_tf.coordinator.server import serve

        client_token, trainer_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        server = serve(
            self.directory / DB_NAME,
            "127.0.0.1:0",
            trainer_token=trainer_token,
            client_token=client_token,
            lease_ttl_s=LOCAL_LEASE_TTL_S,
        )
        try:
            with (
                connection.connect(server.address, token=client_token) as client,
                connection.connect(server.address, token=trainer_token) as trainer,
            ):
                yield client, trainer
        finally:
            server.stop(2.0)

    def _ours(self, stub: Any) -> list[Any]:
        """Experiments of this search (its name and script model) that are live or succeeded, oldest first."""
        from taylorglo_tf.commands import client
        from taylorglo_tf.rpc import types_pb2

        found = [
            e
            for e in client.list_experiments(stub)
            if e.spec.name == self.name
            and e.spec.task.model == self.model_name
            and types_pb2.ExperimentState.Name(e.state) in _LIVE_OR_DONE
        ]
        return sorted(found, key=lambda e: (e.create_time.seconds, e.create_time.nanos, e.id))

    def _experiment(self, stub: Any, *, remote: bool) -> Any:
        """The experiment to train: found again by name, or submitted (see the module for who submits)."""
        from taylorglo_tf.commands import client
        from taylorglo_tf.rpc import experiment_service_pb2

        role = os.environ.get(ROLE_ENV, "").strip().lower() if remote else CHIEF
        if role and role != CHIEF:  # a worker copy: the chief submits
            self.is_chief = False
            deadline = time.monotonic() + FIND_TIMEOUT_S
            while not (found := self._ours(stub)):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"no experiment named {self.name!r} appeared within {FIND_TIMEOUT_S:.0f} s; "
                        f"start the copy with {ROLE_ENV}={CHIEF}"
                    )
                time.sleep(FIND_POLL_S)
            return self._announce(found[-1], "joined")
        found = self._ours(stub)
        # overwrite on many machines: only the chief starts again (copies without a role join)
        if found and not (remote and role == CHIEF and self.overwrite):
            self.is_chief = role == CHIEF  # without roles, the copy that submitted it
            return self._announce(found[-1], "resumed" if role == CHIEF and not remote else "joined")
        submitted = stub.SubmitExperiment(
            experiment_service_pb2.SubmitExperimentRequest(spec=self.spec), timeout=client.RPC_TIMEOUT_S
        )
        if remote and not role:  # no chief: the first submitted wins; a later one is withdrawn
            first = self._ours(stub)[0]
            if first.id != submitted.id:
                stub.CancelExperiment(
                    experiment_service_pb2.CancelExperimentRequest(experiment_id=submitted.id),
                    timeout=client.RPC_TIMEOUT_S,
                )
                self.is_chief = False
                return self._announce(first, "joined")
        return self._announce(submitted, "submitted")

    def _announce(self, experiment: Any, how: str) -> Any:
        self._print(
            f"{how} experiment {experiment.id} ({self.name}): {experiment.evaluations_done}/"
            f"{experiment.evaluations_total} evaluations done"
        )
        return experiment

    def _train_while_watching(self, stub: Any, trainer_channel: Any, experiment: Any) -> None:
        """An in-process trainer of this experiment only, while the progress bar follows it."""
        from taylorglo_tf.commands import client
        from taylorglo_tf.rpc import types_pb2
        from taylorglo_tf.trainer.keras_evaluator import KerasEvaluator
        from taylorglo_tf.trainer.worker import Worker

        if types_pb2.ExperimentState.Name(experiment.state) == "EXPERIMENT_STATE_SUCCEEDED":
            return
        worker = Worker(
            trainer_channel,
            KerasEvaluator(candidates_per_step=self.candidates_per_step),
            f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"[:200],
            wait_ms=TRAINER_WAIT_MS,
            grace_s=TRAINER_GRACE_S,
            candidates_per_step=self.candidates_per_step,
            experiment_id=experiment.id,
        )
        failure: list[BaseException] = []

        def train() -> None:
            try:
                worker.run()
            except BaseException as error:  # reported to the caller after the watch
                failure.append(error)

        thread = threading.Thread(target=train, name="loss-search-trainer", daemon=True)
        thread.start()
        try:
            code = client.watch(stub, experiment.id, self._stream)
        finally:
            worker.request_stop()
            thread.join()
        if failure:
            raise RuntimeError(f"the in-process trainer failed: {failure[0]}") from failure[0]
        if code != 0:
            final = stub.GetExperiment(_get_request(experiment.id), timeout=client.RPC_TIMEOUT_S)
            raise RuntimeError(
                f"experiment {experiment.id} ended {types_pb2.ExperimentState.Name(final.state)}"
                + (f": {final.error}" if final.error else "")
            )

    def _write_result(self, stub: Any) -> None:
        from taylorglo_tf.commands import client
        from taylorglo_tf.results import write_result_folder

        assert self.experiment_id is not None
        result = client.fetch_result(stub, self.experiment_id)
        write_result_folder(result, self.directory)
        if result.best_theta:
            self._print(f"best fitness {result.best_fitness:.4f}; result folder: {self.directory}")
        else:
            self._print(f"no candidate trained successfully; result folder: {self.directory}")


def _get_request(experiment_id: str) -> Any:
    from taylorglo_tf.rpc import experiment_service_pb2

    return experiment_service_pb2.GetExperimentRequest(experiment_id=experiment_id)
