"""The binary-classification view of a loss (paper Figure 3a) and ``taylorglo plot``."""

from __future__ import annotations

import json
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest

from taylorglo_tf import plotting, taylor

MNIST_THETA = list(taylor.PAPER_MNIST_THETA)


def test_binary_view_is_the_two_class_loss_shifted_to_zero_at_y0_equal_one():
    y0, values = plotting.binary_view({"theta": MNIST_THETA}, num_points=11)
    expansion = taylor.Expansion()
    raw = -0.5 * (expansion.evaluate(MNIST_THETA, [1.0, y0]) + expansion.evaluate(MNIST_THETA, [0.0, 1.0 - y0]))
    np.testing.assert_allclose(y0, np.linspace(0, 1, 11))
    np.testing.assert_allclose(values, raw - raw[-1], rtol=1e-12, atol=1e-12)
    assert values[-1] == 0.0


def test_mnist_loss_has_the_papers_regularising_minimum_before_y0_equal_one():
    # Figure 3a: the discovered loss is lowest short of full confidence, not at y0 = 1.
    y0, values = plotting.binary_view({"theta": MNIST_THETA})
    assert 0.6 < y0[np.argmin(values)] < 1.0
    assert values.min() < 0.0


def test_cross_entropy_view_decreases_monotonically():
    y0, values = plotting.binary_view("cross_entropy", num_points=50)
    assert np.all(np.diff(values[1:]) < 0)
    np.testing.assert_allclose(values[25], -np.log(y0[25]), rtol=1e-4)


def test_plot_losses_draws_one_line_per_loss_with_labels():
    fig, ax = plt.subplots()
    try:
        plotting.plot_losses(ax, {"mnist": {"theta": MNIST_THETA}, "baikal": "baikal"})
        assert [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")] == [
            "mnist",
            "baikal",
        ]
        # the pole of Baikal at y0 = 0 must not squash the axes
        assert ax.get_ylim()[1] < 100
    finally:
        plt.close(fig)


def test_plot_losses_uses_given_colours_and_can_leave_out_the_legend():
    fig, ax = plt.subplots()
    configs = [taylor.keras_config(taylor.PAPER_MNIST_THETA, 3, ("x", "y")), "cross_entropy"]
    plotting.plot_losses(ax, configs, colors=["red", (0.0, 0.0, 1.0, 1.0)], legend=False)
    assert [line.get_color() for line in ax.get_lines() if line.get_label() != "_nolegend_"][:2] == [
        "red",
        (0.0, 0.0, 1.0, 1.0),
    ]
    assert ax.get_legend() is None
    with pytest.raises(ValueError, match="1 colors for 2 losses"):
        plotting.plot_losses(ax, configs, colors=["red"])
    plt.close(fig)


def test_plot_loss_writes_a_png(tmp_path):
    out = plotting.plot_loss(taylor.keras_config(MNIST_THETA), tmp_path / "loss.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_gets_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        plotting.binary_view(tmp_path / "none.json")
    with pytest.raises(ValueError, match="num_points"):
        plotting.binary_view({"theta": MNIST_THETA}, num_points=1)
    with pytest.raises(ValueError, match="length 8"):
        plotting.binary_view({"theta": MNIST_THETA[:3]})


def test_taylorglo_plot_command_writes_the_figure_without_tensorflow_or_a_backend_switch(tmp_path):
    loss_file = tmp_path / "best.json"
    loss_file.write_text(json.dumps(taylor.keras_config(MNIST_THETA)))
    # A library must leave the user's matplotlib backend (e.g. a notebook's) as it found it.
    script = (
        "import sys, matplotlib; matplotlib.use('svg');"
        "from taylorglo_tf.commands import plot; import argparse;"
        "p = argparse.ArgumentParser(); plot.add_arguments(p);"
        f"code = plot.run(p.parse_args([{str(loss_file)!r}]));"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules;"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend(); sys.exit(code)"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "best.png")
    assert (tmp_path / "best.png").stat().st_size > 1000


def test_taylorglo_plot_command_reports_a_missing_file(tmp_path, capsys):
    import argparse

    from taylorglo_tf.commands import plot

    parser = argparse.ArgumentParser()
    plot.add_arguments(parser)
    assert plot.run(parser.parse_args([str(tmp_path / "missing.json")])) == 2
    assert "does not exist" in capsys.readouterr().err


def test_taylorglo_plot_of_a_baseline_name_keeps_tensorflows_start_up_lines_off_the_terminal(tmp_path):
    # TensorFlow writes them through absl whatever TF_CPP_MIN_LOG_LEVEL says (conftest sets it).
    proc = subprocess.run(
        [sys.executable, "-m", "taylorglo_tf", "plot", "baikal", "--out", str(tmp_path / "b.png")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert (tmp_path / "b.png").stat().st_size > 1000
