"""taylorglo trainer --gpus: which GPUs get a worker, and how a child is pinned (no GPU needed)."""

from __future__ import annotations

import pytest

from taylorglo_tf import cli
from taylorglo_tf.commands import gpus
from taylorglo_tf.commands import trainer as trainer_command
from taylorglo_tf.commands.arguments import CommandError
from taylorglo_tf.commands.gpus import GpuError, child_argv, chosen_gpus, visible_gpus
from taylorglo_tf.limits import MAX_LEASE_CANDIDATES


def test_visible_gpus_are_the_cuda_visible_devices_when_set():
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,3"}) == ["0", "1", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_all_means_every_visible_gpu_once_and_a_list_picks_some():
    assert chosen_gpus("all", ["0", "1", "2"]) == ["0", "1", "2"]
    assert chosen_gpus("0,2", ["0", "1", "2"]) == ["0", "2"]


@pytest.mark.parametrize(
    "value, visible, message",
    [
        ("5", ["0", "1"], r"unknown GPU\(s\) \['5'\]; visible GPUs: 0,1"),
        ("0,0", ["0", "1"], "names a GPU twice"),
        ("0,", ["0", "1"], "unknown GPU"),
        ("all", [], "no GPU is visible"),
    ],
)
def test_a_gpu_list_naming_what_is_not_there_is_refused_naming_it(value, visible, message):
    with pytest.raises(GpuError, match=message):
        chosen_gpus(value, visible)


def test_a_child_runs_the_same_trainer_without_gpus_and_with_its_own_id():
    argv = ["--coordinator", "c:1", "--gpus", "all", "--trainer-id", "box", "--candidates-per-step", "auto"]
    assert child_argv(argv, "2") == [
        "--coordinator",
        "c:1",
        "--candidates-per-step",
        "auto",
        "--trainer-id",
        "box-gpu2",
    ]
    assert child_argv(["--gpus=0,1", "--coordinator", "c:1"], "1") == ["--coordinator", "c:1"]


def test_the_trainer_refuses_a_gpu_the_host_does_not_have(monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    code = cli.main(["trainer", "--coordinator", "127.0.0.1:1", "--gpus", "0,7", "--evaluator", "synthetic"])
    assert code == 2  # bad input
    assert "taylorglo trainer: error: --gpus '0,7': unknown GPU(s) ['7']; visible GPUs: 0,1" in capsys.readouterr().err


def test_candidates_per_step_takes_a_positive_integer_or_auto(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["trainer", "--candidates-per-step", "auto"]).candidates_per_step == "auto"
    assert parser.parse_args(["trainer", "--candidates-per-step", "8"]).candidates_per_step == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["trainer", "--candidates-per-step", "0"])
    assert "--candidates-per-step" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["trainer", "run"])
def test_candidates_per_step_above_the_lease_limit_is_refused_by_the_parser_naming_it(command, capsys):
    parser = cli.build_parser()
    limit = str(MAX_LEASE_CANDIDATES)
    assert parser.parse_args([command, "--candidates-per-step", limit]).candidates_per_step == MAX_LEASE_CANDIDATES
    with pytest.raises(SystemExit):
        parser.parse_args([command, "--candidates-per-step", str(MAX_LEASE_CANDIDATES + 1)])
    error = capsys.readouterr().err
    assert "--candidates-per-step" in error and f"must be <= {limit}, got {MAX_LEASE_CANDIDATES + 1}" in error


def test_an_abbreviated_gpus_option_is_refused_naming_it(capsys):
    """``--gpu all`` once passed as ``--gpus`` but escaped ``child_argv``: every child started children."""
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(["trainer", "--gpu", "all"])
    assert exit_info.value.code == 2
    assert "error: unrecognized arguments: --gpu all" in capsys.readouterr().err


class _FakeChild:
    """A started child that has already exited with status 0."""

    pid = 4242

    def poll(self):
        return 0

    def wait(self):
        return 0


def test_the_parent_tells_each_child_its_gpu_in_the_environment(monkeypatch):
    started: list[tuple[list[str], dict[str, str]]] = []

    def popen(command, env):
        started.append((command, env))
        return _FakeChild()

    monkeypatch.delenv(gpus.CHILD_ENV, raising=False)
    monkeypatch.setattr(gpus.subprocess, "Popen", popen)
    assert gpus.run_per_gpu(["--coordinator", "c:1", "--gpus", "all"], ["0", "1"]) == 0
    assert [env[gpus.CHILD_ENV] for _, env in started] == ["0", "1"]
    assert [env["CUDA_VISIBLE_DEVICES"] for _, env in started] == ["0", "1"]


@pytest.mark.parametrize("gpus_argv", [["--gpus", "all"], ["--gpus", "0"], ["--gpus=all", "--gpus", "all"]])
def test_a_child_never_starts_children_whatever_its_command_line_asks(monkeypatch, capsys, gpus_argv):
    """The marker, not the command line, makes a child: it runs its one worker on its GPU."""

    def popen(*args, **kwargs):
        raise AssertionError("a child started a child")

    def open_channel(args):
        raise CommandError("stopped where the worker would connect")

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what its parent pinned it to
    monkeypatch.setenv(gpus.CHILD_ENV, "0")
    monkeypatch.setattr(gpus.subprocess, "Popen", popen)
    monkeypatch.setattr(trainer_command, "open_channel", open_channel)
    code = cli.main(["trainer", "--coordinator", "127.0.0.1:1", "--evaluator", "synthetic", *gpus_argv])
    assert code != 0
    assert "stopped where the worker would connect" in capsys.readouterr().err
