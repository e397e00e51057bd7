"""``taylorglo run``: coordinator + local trainers + progress + result folder + comparison, end to end."""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from taylorglo_tf.commands import run as run_command
from taylorglo_tf.commands.client import EXIT_UNSUCCESSFUL

ROOT = Path(__file__).resolve().parents[2]


def write_spec(path: Path, **search) -> Path:
    spec = {
        "name": "run test",
        "task": {"dataset": "digits", "model": "tiny", "steps": 30, "seed": 0},
        "search": {"population": 4, "generations": 2, "seed": 3, **search},
    }
    path.write_text(yaml.safe_dump(spec))
    return path


def start_run(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="120")
    return subprocess.Popen(
        [sys.executable, "-m", "taylorglo_tf", "run", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def processes_dialing(address: str) -> list[int]:
    """PIDs whose command line contains ``address`` (the run's trainers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next(line for line in (entry / "status").read_text().splitlines() if line.startswith("State:"))
        except (OSError, StopIteration):
            continue
        if address in cmdline and "zombie" not in state:
            pids.append(int(entry.name))
    return pids


def coordinator_address(stdout: str) -> str:
    match = re.search(r"coordinator on (127\.0\.0\.1:\d+)", stdout)
    assert match, stdout
    return match.group(1)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_run_with_keras_trainers_writes_the_result_folder_and_the_comparison(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml")
    with_paper = {**yaml.safe_load(spec.read_text()), "paper": {"table": "Table 9, digits", "taylorglo": 0.9876}}
    with_paper["task"]["lr_scale"] = 0.5  # the search and the comparison at half the recipe's rate
    spec.write_text(yaml.safe_dump(with_paper))
    out = tmp_path / "result"
    process = start_run(
        str(spec),
        "--trainers",
        "1",
        "--out",
        str(out),
        "--compare-runs",
        "2",
        "--compare-steps",
        "30",
        "--tuning-seeds",
        "1",
        cwd=tmp_path,
    )
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-3000:]
    assert re.search(r"experiment \w+ succeeded: best fitness 0\.\d{4}", stdout)
    assert "generation 1: best" in stdout  # the watch progress
    candidates = read_csv(out / "candidates.csv")
    assert len(candidates) == 8
    assert {row["status"] for row in candidates} <= {"succeeded", "diverged", "aborted", "invalid"}
    assert {row["trainer_id"] for row in candidates if row["status"] != "invalid"} == {"local-0"}
    assert len(read_csv(out / "history.csv")) == 2
    best = json.loads((out / "best_theta.json").read_text())
    succeeded = [float(row["fitness"]) for row in candidates if row["status"] == "succeeded"]
    assert best["fitness"] == pytest.approx(max(succeeded))
    comparison = json.loads((out / "comparison.json").read_text())
    assert [(r["side"], r["steps"]) for r in comparison["runs"]] == [("loss", 30), ("baseline", 30)] * 2
    assert comparison["baseline"] == "cross_entropy"
    assert "Table 9, digits: test accuracy, mean (std)" in stdout  # the paper block's row, then the measured one
    assert re.search(r"paper +0\.9876 +- +- +10 \+ 10\nmeasured +\d\.\d{4} ", stdout)
    assert json.loads((out / "experiment.json").read_text())["spec"]["task"]["lr_scale"] == 0.5
    assert comparison["task"]["lr_scale"] == 0.5
    tuning = comparison["learning_rate_tuning"]["baseline"]
    assert [row["learning_rate"] for row in tuning["grid"]] == pytest.approx([0.025 * m for m in (0.3, 1, 3, 10, 30)])
    assert tuning["seeds"] == [2] and tuning["split"] == "validation"  # seeds 0 and 1 are the comparison's
    chosen = tuning["chosen_multiplier"]
    assert [(r["side"], r["lr_scale"]) for r in comparison["tuned"]["runs"]] == [
        ("loss", 0.5),
        ("baseline", pytest.approx(0.5 * chosen)),
    ] * 2
    assert comparison["loss_scale"]["ratio"] > 0
    text = (out / "comparison.txt").read_text()
    assert "one-tailed Welch t-test" in text
    assert "at the task's learning rate" in text and "against the tuned baseline" in text
    assert comparison["verdict"] in text and text in stdout  # printed as well as written
    assert (out / "logs" / "trainer-0.log").stat().st_size > 0
    assert processes_dialing(coordinator_address(stdout)) == []


def test_run_with_a_batching_trainer_accounts_for_every_candidate_of_the_digits_search(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", population=6)
    out = tmp_path / "result"
    process = start_run(
        str(spec),
        "--trainers",
        "1",
        "--candidates-per-step",
        "3",
        "--out",
        str(out),
        "--compare-runs",
        "0",
        cwd=tmp_path,
    )
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert "1 trainer(s), 3 candidate(s) per step" in stdout
    candidates = read_csv(out / "candidates.csv")
    assert sorted((int(row["generation"]), int(row["index"])) for row in candidates) == [
        (generation, index) for generation in range(2) for index in range(6)
    ]
    assert {row["status"] for row in candidates} <= {"succeeded", "diverged", "aborted", "invalid"}
    assert any(row["status"] == "succeeded" for row in candidates)
    # The trainer leased 3 candidates per LeaseCandidate call and trained them together: its log says so.
    log = (out / "logs" / "trainer-0.log").read_text()
    assert re.search(r"leased \S+: experiment \w+ generation \d+ candidate \d+ \(attempt \d+, 3 in this call\)", log), (
        log[-2000:]
    )
    assert re.search(r"\((2|3) trained together", log), log[-2000:]


def test_run_measures_the_trainer_layout_once_and_reuses_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def measured(task, cores, **kwargs):
        calls.append((task.model, cores))
        return {"trainers": 1, "candidates_per_step": 4, "rates": {"1 trainer, K=4": 9.0, "2 trainers, K=1": 5.0}}

    from taylorglo_tf.training import tuning

    monkeypatch.setattr(tuning, "local_layout", measured)
    args = run_command_args(None, tmp_path)
    assert args.trainers == "auto"
    options = run_command.RunOptions.from_args(args)
    one_run = run_command.LocalSearch(run_command.load_run_spec(None), options, tmp_path / "out", io.StringIO())
    assert one_run._layout() == (1, 4) and calls == [("tiny", os.cpu_count())]
    one_run.options = dataclasses.replace(options, trainers=3, candidates_per_step=None)
    assert one_run._layout() == (3, 1) and len(calls) == 1  # given: not measured


def test_with_successive_halving_the_measured_layout_holds_a_whole_generation(tmp_path, monkeypatch):
    """Candidates that train together reach each checkpoint together: the losers stop right there
    instead of training on while later candidates wait for a slot."""
    from taylorglo_tf.training import tuning

    monkeypatch.setenv("TAYLORGLO_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(
        tuning, "local_layout", lambda task, cores, **kw: {"trainers": 2, "candidates_per_step": 4, "rates": {}}
    )
    options = run_command.RunOptions.from_args(run_command_args(None, tmp_path))
    spec = run_command.load_run_spec(None)  # population 12
    spec.search.early_stopping = "successive_halving"
    out = io.StringIO()
    assert run_command.LocalSearch(spec, options, tmp_path / "out", out)._layout() == (2, 6)
    assert "6 candidates per step (measured best 4)" in out.getvalue()
    spec.search.early_stopping = "none"
    assert run_command.LocalSearch(spec, options, tmp_path / "out", io.StringIO())._layout() == (2, 4)
    given = dataclasses.replace(options, candidates_per_step=3)  # the user's K stands
    spec.search.early_stopping = "successive_halving"
    assert run_command.LocalSearch(spec, given, tmp_path / "out", io.StringIO())._layout() == (2, 3)


def test_run_gives_its_trainers_the_measured_onednn_setting_unless_the_user_chose_one(tmp_path, monkeypatch):
    from taylorglo_tf import runtime
    from taylorglo_tf.training import tuning

    measured_with = []

    def measured(task, cores, *, onednn, **kwargs):
        measured_with.append(tuple(onednn))
        return {"trainers": 1, "candidates_per_step": 2, "onednn": "0", "rates": {"1 trainer, K=2": 9.0}}

    monkeypatch.setattr(tuning, "local_layout", measured)
    monkeypatch.delenv(runtime.ONEDNN_ENV, raising=False)
    monkeypatch.delenv(runtime.DEFAULTED_ENV, raising=False)
    runtime.set_tensorflow_defaults()  # as the taylorglo command does first
    options = run_command.RunOptions.from_args(run_command_args(None, tmp_path))
    search = run_command.LocalSearch(run_command.load_run_spec(None), options, tmp_path / "out", io.StringIO())
    assert search._layout() == (1, 2)
    assert measured_with == [("0", "1")] and os.environ[runtime.ONEDNN_ENV] == "0"

    monkeypatch.setenv(runtime.ONEDNN_ENV, "1")  # the user's own choice
    monkeypatch.delenv(runtime.DEFAULTED_ENV)
    assert search._layout() == (1, 2)
    assert measured_with[-1] == ("1",) and os.environ[runtime.ONEDNN_ENV] == "1"


@pytest.mark.slow
def test_run_with_the_synthetic_evaluator_accounts_for_every_candidate_of_the_default_search(tmp_path):
    out = tmp_path / "result"
    process = start_run(
        "--evaluator", "synthetic", "--trainers", "2", "--out", str(out), "--compare-runs", "0", cwd=tmp_path
    )
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr[-3000:]
    spec = run_command.load_run_spec(None)
    total = spec.search.population * spec.search.generations
    assert f"{total} evaluations" in stdout
    candidates = read_csv(out / "candidates.csv")
    assert len(candidates) == total
    assert sorted((int(r["generation"]), int(r["index"])) for r in candidates) == [
        (g, i) for g in range(spec.search.generations) for i in range(spec.search.population)
    ]
    assert {r["trainer_id"] for r in candidates if r["status"] == "succeeded"} <= {"local-0", "local-1"}
    assert len(read_csv(out / "history.csv")) == spec.search.generations
    # the live TensorBoard run (written while the search ran): one HParams trial per candidate
    [live] = [p for p in (out / "tensorboard").iterdir() if p.is_dir()]
    assert len([p for p in live.iterdir() if p.is_dir()]) == total
    assert not (out / "comparison.json").exists()
    assert processes_dialing(coordinator_address(stdout)) == []


def start_long_run(tmp_path: Path, out: Path, until_generation: int) -> tuple[subprocess.Popen, str]:
    """A synthetic run of a search too long to finish, once ``until_generation`` is done and
    both trainers are up; returns the process and its coordinator's address."""
    spec = write_spec(tmp_path / "long.yaml", population=20, generations=5000)
    process = start_run(str(spec), "--evaluator", "synthetic", "--out", str(out), "--compare-runs", "0", cwd=tmp_path)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    deadline = time.monotonic() + 90
    while not any(f"generation {until_generation}: best" in line for line in lines):
        assert process.poll() is None and time.monotonic() < deadline, "".join(lines)
        time.sleep(0.2)
    address = coordinator_address("".join(lines))
    assert len(processes_dialing(address)) == 2
    return process, address


def test_sigterm_stops_trainers_and_coordinator_and_keeps_the_partial_result(tmp_path):
    out = tmp_path / "result"
    process, address = start_long_run(tmp_path, out, until_generation=1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == run_command.EXIT_INTERRUPTED
    assert "interrupted" in process.stderr.read()
    assert processes_dialing(address) == []
    record = json.loads((out / "experiment.json").read_text())
    assert 40 <= record["evaluations_done"] < 20 * 5000
    assert len(read_csv(out / "history.csv")) >= 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_trainers_exit_when_the_run_process_is_killed(tmp_path):
    process, address = start_long_run(tmp_path, tmp_path / "result", until_generation=0)
    process.kill()  # no cleanup code runs: the kernel tells the trainers
    process.wait(timeout=30)
    deadline = time.monotonic() + 30
    while processes_dialing(address):
        assert time.monotonic() < deadline, "trainers outlived the killed run"
        time.sleep(0.2)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_a_trainer_whose_parent_died_before_the_death_signal_was_set_exits_at_once(tmp_path):
    # The window between fork and prctl: if the parent is already gone, no signal would ever come.
    survived = tmp_path / "survived"
    script = (
        "import os, time\n"
        "from taylorglo_tf.commands.run import _parent_death_signal\n"
        "set_signal, parent = _parent_death_signal(), os.getpid()\n"
        "child = os.fork()\n"
        "if child == 0:\n"
        "    while os.getppid() == parent:\n"
        "        time.sleep(0.01)\n"  # until the parent has exited
        "    set_signal()\n"
        f"    open({str(survived)!r}, 'w').close()\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
    )
    child = int(
        subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60, check=True
        ).stdout
    )
    deadline = time.monotonic() + 30
    while _alive(child):
        assert time.monotonic() < deadline, "the orphaned child neither exited nor survived"
        time.sleep(0.05)
    assert not survived.exists()


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False


def test_a_bad_spec_is_refused_naming_the_field(tmp_path, capsys):
    spec = write_spec(tmp_path / "bad.yaml", population=1)
    code = run_command.run(run_command_args(str(spec), tmp_path))
    assert code == run_command.EXIT_BAD_INPUT
    assert "spec.search.population" in capsys.readouterr().err


def test_a_missing_data_directory_is_refused(tmp_path, capsys):
    args = run_command_args(None, tmp_path)
    args.data_dir = str(tmp_path / "nope")
    assert run_command.run(args) == run_command.EXIT_BAD_INPUT
    assert "--data-dir" in capsys.readouterr().err


def test_a_result_folder_that_cannot_be_made_is_refused_before_anything_starts(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    args = run_command_args(None, tmp_path)
    args.out = str(tmp_path / "a-file")
    assert run_command.run(args) == run_command.EXIT_BAD_INPUT
    assert f"cannot make the result folder {args.out!r}" in capsys.readouterr().err


def run_command_args(spec, tmp_path):
    from taylorglo_tf.cli import build_parser

    argv = ["run", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path)]
    return build_parser().parse_args(argv + ([spec] if spec else []))


def test_the_default_spec_is_the_documented_digits_search():
    spec = run_command.load_run_spec(None)
    assert (spec.task.dataset, spec.task.model) == ("digits", "tiny")
    assert spec == run_command.load_run_spec(str(ROOT / "docs" / "examples" / "digits-search.yaml"))


def test_default_out_dir_is_under_results_with_a_safe_name_and_the_time():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    assert run_command.default_out_dir("my search/../x", now) == Path("results/my-search-..-x-20260102-030405")
    assert run_command.default_out_dir("", now) == Path("results/search-20260102-030405")


def test_the_trainer_monitor_reports_once_when_every_trainer_has_exited():
    class Trainers:
        def __init__(self):
            self.count = 2

        def alive(self):
            self.count -= 1
            return max(self.count, 0)

    calls = []
    done = threading.Event()
    run_command._watch_trainers(Trainers(), lambda: calls.append(1), done, interval_s=0.01)
    assert calls == [1]


@pytest.mark.slow
def test_the_default_run_is_the_readme_main_job(tmp_path):
    """`taylorglo run` with no arguments: digits/tiny search, then the comparison (a few minutes)."""
    out = tmp_path / "result"
    started = time.monotonic()
    process = start_run("--out", str(out), cwd=tmp_path)
    _stdout, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    print(f"default run: {time.monotonic() - started:.0f} s")
    assert json.loads((out / "best_theta.json").read_text())["fitness"] > 0.9
    comparison = json.loads((out / "comparison.json").read_text())
    assert len(comparison["runs"]) == 2 * run_command.DEFAULT_COMPARE_RUNS


def test_the_spec_guide_example_is_a_valid_spec():
    from taylorglo_tf import spec as spec_module

    guide = (ROOT / "docs" / "how-to" / "spec.md").read_text()
    block = re.search(r"```yaml\n(name: mnist-basic-cnn.*?)```", guide, re.S)
    assert block, "the spec guide's example is missing"
    loaded = spec_module.load_spec(yaml.safe_load(block.group(1)))
    assert (loaded.task.dataset, loaded.search.population, loaded.search.num_classes) == ("tfds:mnist", 28, 10)


def test_a_search_whose_dataset_file_is_missing_fails_naming_it_and_skips_the_comparison(tmp_path):
    spec = write_spec(tmp_path / "spec.yaml", generations=3)
    spec.write_text(spec.read_text().replace("dataset: digits", "dataset: npz:nothere.npz"))
    out = tmp_path / "result"
    process = start_run(str(spec), "--trainers", "1", "--out", str(out), "--data-dir", str(tmp_path), cwd=tmp_path)
    stdout, stderr = process.communicate(timeout=240)
    assert process.returncode == EXIT_UNSUCCESSFUL, stderr[-3000:]
    assert f"FileNotFoundError: npz file {tmp_path / 'nothere.npz'} not found" in stdout
    assert "no candidate trained successfully" in stdout and "comparison" not in stdout
    experiment = json.loads((out / "experiment.json").read_text())
    assert experiment["state"] == "EXPERIMENT_STATE_FAILED" and experiment.get("generation", 0) == 0
    assert not (out / "best_loss.json").exists()


def test_the_options_are_built_once_from_the_arguments_without_changing_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TAYLORGLO_DATA_DIR", str(tmp_path / "data"))
    from taylorglo_tf.cli import build_parser

    args = build_parser().parse_args(["run", "--trainers", "3", "--no-tune-baseline-lr", "--lease-ttl", "7"])
    parsed = dict(vars(args))
    options = run_command.RunOptions.from_args(args)
    assert vars(args) == parsed  # args.data_dir stays None: the default is the options'
    assert (options.data_dir, options.trainers, options.tune_baseline_lr, options.lease_ttl) == (
        str(tmp_path / "data"),
        3,
        False,
        7.0,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.trainers = 1


class _TrainersStarted(Exception):
    pass


def test_the_coordinator_binds_a_port_the_os_picks_and_its_trainers_dial_the_port_it_got(tmp_path, monkeypatch):
    """A port probed free and bound later can be taken in between by any process on the machine:
    the coordinator binds port 0 itself, and the trainers are given the port it reports."""
    from taylorglo_tf.coordinator import server as server_module

    real_serve, listened, servers, dialed = server_module.serve, [], [], []

    def serve(db_path, listen, **kwargs):
        listened.append(listen)
        servers.append(real_serve(db_path, listen, **kwargs))
        return servers[-1]

    def start(trainers):
        dialed.append(trainers.address)
        raise _TrainersStarted

    monkeypatch.setattr(server_module, "serve", serve)
    monkeypatch.setattr(run_command.LocalTrainers, "start", start)
    options = run_command.RunOptions(data_dir=str(tmp_path), trainers=1, evaluator="synthetic")
    search = run_command.LocalSearch(run_command.load_run_spec(None), options, tmp_path / "out", io.StringIO())
    with pytest.raises(_TrainersStarted):
        search.run()
    assert listened == ["127.0.0.1:0"]
    [server] = servers
    assert server.port > 0 and dialed == [f"127.0.0.1:{server.port}"]


def test_trainers_started_beside_a_serving_coordinator_do_not_fork_under_grpc(tmp_path, capfd):
    """The trainers start after the coordinator's gRPC threads: a fork then (a ``preexec_fn``)
    runs gRPC's fork handlers, which log warnings and errors into the user's terminal."""
    from taylorglo_tf.coordinator.server import serve

    server = serve(tmp_path / "search.db")
    trainers = run_command.LocalTrainers(2, server.address, "t" * 32, tmp_path / "logs", evaluator="synthetic")
    try:
        trainers.start()
    finally:
        trainers.stop()
        server.stop(0)
    assert "fork" not in capfd.readouterr().err
