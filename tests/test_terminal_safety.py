"""Terminal injection: control characters are refused in names and never printed raw."""

from __future__ import annotations

import argparse
import io
import unicodedata
from concurrent import futures

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from taylorglo_tf import spec as spec_lib
from taylorglo_tf import text
from taylorglo_tf.commands import client
from taylorglo_tf.connection import connect
from taylorglo_tf.coordinator.server import serve
from taylorglo_tf.rpc import experiment_service_pb2 as es
from taylorglo_tf.rpc import experiment_service_pb2_grpc as es_grpc
from taylorglo_tf.rpc import types_pb2

# Bidi marks, zero-width and tag characters last: a terminal shows nothing for them.
HOSTILE = "evil\x1b[2J\x1b]0;pwned\x07\x00\r\u202etxt.exe[bold red]\u200e\u200f\u061c\u200b\u2060\ufeff\U000e0068"
TASK = {"dataset": "digits", "model": "tiny", "steps": 10}


@pytest.mark.parametrize(
    "name", ["a\x00b", "clear\x1b[2J", "two\nlines", "tab\there", "del\x7f", "c1\x9b", "bidi\u202eflip", "sep\u2028x"]
)
def test_a_name_with_a_control_character_is_refused_naming_the_field(name):
    with pytest.raises(spec_lib.SpecError) as err:
        spec_lib.load_spec({"name": name, "task": TASK})
    assert err.value.field == "spec.name"
    assert "contains control characters" in str(err.value)
    assert not text.control_characters(str(err.value))  # the message itself is safe to print


INVISIBLE = {
    "\u200e": "\\u200e",  # left-to-right mark
    "\u200f": "\\u200f",  # right-to-left mark
    "\u061c": "\\u061c",  # Arabic letter mark
    "\u200b": "\\u200b",  # zero-width space
    "\u2060": "\\u2060",  # word joiner
    "\ufeff": "\\ufeff",  # byte order mark
    "\u00ad": "\\xad",  # soft hyphen
    "\u2066": "\\u2066",  # left-to-right isolate
    "\U000e0001": "\\U000e0001",  # language tag
    "\U000e0041": "\\U000e0041",  # tag letter A: tags spell hidden text
    "\U000e007f": "\\U000e007f",  # cancel tag
}


@pytest.mark.parametrize("ch, escape", INVISIBLE.items(), ids=list(INVISIBLE.values()))
def test_a_name_with_a_bidi_mark_or_an_invisible_character_is_refused_naming_it_escaped(ch, escape):
    with pytest.raises(spec_lib.SpecError) as err:
        spec_lib.load_spec({"name": f"best{ch}loss", "task": TASK})
    assert err.value.field == "spec.name"
    assert f"contains control characters ({escape})" in str(err.value)
    assert ch not in str(err.value)


@pytest.mark.parametrize("ch, escape", INVISIBLE.items(), ids=list(INVISIBLE.values()))
def test_a_bidi_mark_or_an_invisible_character_is_printed_as_its_escape(ch, escape):
    assert text.escape_controls(f"a{ch}b") == f"a{escape}b"


def test_the_joiners_that_shape_emoji_and_persian_words_are_accepted_in_names():
    for name in ("👩\u200d🔬 search", "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"):  # scientist; Persian
        assert spec_lib.load_spec({"name": name, "task": TASK}).name == name
        assert text.escape_controls(name) == name


@given(st.text(max_size=50))
def test_escaped_text_holds_no_control_character_and_text_without_one_is_unchanged(value):
    shown = text.escape_controls(value)
    assert not any(text.is_control(ch) for ch in shown)
    assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in shown)
    assert not any(unicodedata.category(ch) == "Cf" and ch not in "\u200c\u200d" for ch in shown)
    if not text.control_characters(value):
        assert shown == value


@given(st.text(max_size=50))
def test_a_name_is_accepted_exactly_when_it_holds_no_control_character(name):
    try:
        spec_lib.load_spec({"name": name, "task": TASK})
    except spec_lib.SpecError as error:
        assert error.field == "spec.name" and text.control_characters(name)
    else:
        assert not text.control_characters(name)


def test_names_in_any_script_with_emoji_and_brackets_are_accepted():
    name = "Suche über CIFAR-10 [v2] — 損失 🚀 👨‍👩‍👧"
    assert spec_lib.load_spec({"name": name, "task": TASK}).name == name


@pytest.mark.parametrize(
    "name, shown",
    [
        ("x\x1b[31m", "'x\\\\x1b[31m' contains control characters (\\x1b)"),
        ("x\u200fy", "'x\\\\u200fy' contains control characters (\\u200f)"),
    ],
    ids=["esc", "rtl-mark"],
)
def test_the_coordinator_refuses_a_name_with_esc_or_a_bidi_mark_as_invalid_argument(tmp_path, name, shown):
    server = serve(tmp_path / "c.db")
    try:
        with connect(server.address) as channel:
            spec = types_pb2.ExperimentSpec(name=name, task=types_pb2.TaskSpec(**TASK))
            with pytest.raises(grpc.RpcError) as err:
                es_grpc.ExperimentServiceStub(channel).SubmitExperiment(
                    es.SubmitExperimentRequest(spec=spec), timeout=10
                )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"spec.name: {shown}")
    finally:
        server.stop(grace=0)


def hostile_experiment(state=types_pb2.EXPERIMENT_STATE_FAILED) -> types_pb2.Experiment:
    """What an older coordinator (or a hand-edited database) could still hold."""
    spec = types_pb2.ExperimentSpec(name=HOSTILE, task=types_pb2.TaskSpec(dataset="npz:" + HOSTILE, model=HOSTILE))
    spec.search.generations = 1
    return types_pb2.Experiment(
        id="exp\x1b[1m", spec=spec, state=state, error="boom\x1b[31m\nsecond line", evaluations_total=2
    )


class HostileExperiments(es_grpc.ExperimentServiceServicer):
    def GetExperiment(self, request, context):
        return hostile_experiment()

    def ListExperiments(self, request, context):
        return es.ListExperimentsResponse(experiments=[hostile_experiment()])

    def WatchExperiment(self, request, context):
        yield es.ProgressEvent(kind=es.ProgressEvent.KIND_SNAPSHOT, experiment=hostile_experiment())
        yield es.ProgressEvent(kind=es.ProgressEvent.KIND_EXPERIMENT_FINISHED, experiment=hostile_experiment())

    def GetResult(self, request, context):
        return es.ExperimentResult(experiment=hostile_experiment())

    def CancelExperiment(self, request, context):
        context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"experiment {HOSTILE} already finished")

    def DeleteExperiment(self, request, context):
        return es.DeleteExperimentResponse(experiment=hostile_experiment())


@pytest.fixture
def hostile_address():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    es_grpc.add_ExperimentServiceServicer_to_server(HostileExperiments(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def invoke(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="taylorglo")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("status", "watch", "result", "cancel", "delete"):
        client.add_arguments(sub.add_parser(name), name)
    out = io.StringIO()
    return client.run(parser.parse_args(argv), out=out), out.getvalue()


def printed_controls(output: str) -> list[str]:
    return text.control_characters(output.replace("\n", ""))


@pytest.mark.parametrize(
    "argv",
    [
        ["status"],
        ["status", "exp-1"],
        ["watch", "exp-1"],
        ["delete", "exp-1"],
        ["cancel", "exp-1"],
        ["result", "exp-1", "--out", "{tmp}"],
    ],
    ids=["list", "status", "watch", "delete", "error", "result"],
)
def test_no_command_prints_a_control_character_it_received(hostile_address, argv, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    argv = [a.replace("{tmp}", str(tmp_path / "out")) for a in argv]
    code, out = invoke([*argv, "--coordinator", hostile_address])
    err = capsys.readouterr().err
    assert printed_controls(out) == [] and printed_controls(err) == [], (out, err)
    shown = out + err
    if argv[0] != "result":
        # the hostile text is there, escaped: nothing was silently dropped
        assert "\\x1b" in shown and ("evil" in shown or "exp" in shown), shown
    if argv[0] == "cancel":
        assert code == client.EXIT_ERROR and "\\u202etxt.exe" in err


def test_a_rich_markup_lookalike_in_a_name_is_printed_as_text(hostile_address, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    _, out = invoke(["status", "--coordinator", hostile_address])
    assert "[bold red]" in out
