"""The CLI, spec, gRPC and result-folder reference pages are generated from the code, never copied."""

from __future__ import annotations

import argparse
import shutil

import clidoc
import protodoc
import pytest
import resultdoc

from taylorglo_tf import cli
from taylorglo_tf import spec as spec_module
from taylorglo_tf.commands import plot as plot_command

from .conftest import ROOT


def test_a_flag_added_to_a_command_parser_appears_on_the_cli_page(monkeypatch):
    """The page is built from ``cli.build_parser()``: a new flag needs no edit of the docs."""
    original = plot_command.add_arguments

    def add_arguments(parser):
        original(parser)
        parser.add_argument("--docs-probe", metavar="N", type=int, default=7, help="a flag the docs never saw")

    monkeypatch.setattr(plot_command, "add_arguments", add_arguments)
    page = clidoc.page()
    plot_section = page.split("## `taylorglo plot`")[1].split("\n## ")[0]
    assert "| `--docs-probe N` | a flag the docs never saw (default: 7) |" in plot_section
    assert "[--docs-probe N]" in plot_section  # in the usage block too
    monkeypatch.undo()
    assert "--docs-probe" not in clidoc.page()


def test_the_cli_page_has_every_command_and_every_flag_of_each():
    page = clidoc.page()
    parser = cli.build_parser()
    for name, sub in clidoc._subcommands(parser):
        assert name in cli.COMMANDS
        section = page.split(f"## `taylorglo {name}`")[1].split("\n## ")[0]
        for action in sub._actions:
            if action.help == argparse.SUPPRESS:
                continue  # a hidden flag (an old spelling kept working) is not documented
            for option in action.option_strings:
                if option not in ("-h", "--help"):
                    assert f"`{option}" in section, (name, option)
    assert set(dict(clidoc._subcommands(parser))) == set(cli.COMMANDS)


def test_a_field_added_to_the_spec_protos_appears_on_the_spec_page(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    types = protos / "taylorglo" / "v1" / "types.proto"
    text = types.read_text()
    anchor = "  optional double lr_scale = 10;\n"
    assert anchor in text
    types.write_text(text.replace(anchor, anchor + "  // A probe field, in [0, 9].\n  int32 probe_steps = 99;\n"))
    page = protodoc.spec_page(protos)
    assert "| `task.probe_steps` | int32 | - | A probe field, in [0, 9]. |" in page
    assert "probe_steps" not in protodoc.spec_page()


def test_a_method_added_to_a_service_appears_on_the_grpc_page(tmp_path):
    protos = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", protos)
    service = protos / "taylorglo" / "v1" / "experiment_service.proto"
    text = service.read_text()
    anchor = "service ExperimentService {\n"
    service.write_text(
        text.replace(
            anchor,
            anchor + "  // Probes the page.\n  rpc ProbeExperiment(GetExperimentRequest) returns (Experiment);\n",
        )
    )
    page = protodoc.grpc_page(protos)
    assert (
        "| `ProbeExperiment` | [`GetExperimentRequest`](#getexperimentrequest) | [`Experiment`](#experiment) |" in page
    )
    assert "Probes the page." in page


def test_the_spec_page_shows_the_defaults_that_apply_defaults_fills_in():
    page = protodoc.spec_page()
    assert f"| `search.population` | int32 | {spec_module.DEFAULT_POPULATION} |" in page
    assert f"| `search.sigma0` | double | {spec_module.DEFAULT_SIGMA0} |" in page
    assert f"| `search.algorithm` | string | {spec_module.DEFAULT_ALGORITHM} |" in page
    assert f"| `task.augmentation.crop_padding` | int32 | {spec_module.DEFAULT_CROP_PADDING} (when on) |" in page
    assert "| `loss.inputs` | list of string | [x, y] |" in page
    # Every field of every message under ExperimentSpec has a row.
    for field in spec_module.ExperimentSpec.DESCRIPTOR.fields:
        assert f"| `{field.name}` |" in page


def test_the_grpc_page_documents_every_method_of_both_services():
    from taylorglo_tf.rpc import experiment_service_pb2, worker_service_pb2

    page = protodoc.grpc_page()
    for module in (experiment_service_pb2, worker_service_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            assert f"### {service.name} " in page
            for method in service.methods:
                assert f"| `{method.name}` |" in page, method.name


def test_the_result_folder_page_lists_what_write_result_folder_writes(tmp_path):
    page = resultdoc.page()
    written = resultdoc.written_folder(tmp_path)
    for name in written:
        assert f"| `{name}` |" in page
    from taylorglo_tf import results

    for column in results.CANDIDATE_COLUMNS:
        assert f"- `{column}`" in page


def test_a_result_file_without_a_description_fails_the_build(monkeypatch):
    """A file added to the result folder must be described (or the page, and the build, fail)."""
    purposes = dict(resultdoc.PURPOSE)
    del purposes["history.csv"]
    monkeypatch.setattr(resultdoc, "PURPOSE", purposes)
    with pytest.raises(ValueError, match=r"without a description \['history.csv'\]"):
        resultdoc.page()
