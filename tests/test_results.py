"""The result folder (taylorglo_tf.results): tables, best loss, plots, TensorBoard events."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from taylorglo_tf import results, taylor
from taylorglo_tf.rpc import experiment_service_pb2, types_pb2

S = types_pb2


def make_result(generations: int = 3, population: int = 4, order: int = 3) -> experiment_service_pb2.ExperimentResult:
    """A finished search: fitness rises over generations; one candidate per generation diverged."""
    length = taylor.expected_theta_length(order)
    rng = np.random.default_rng(0)
    spec = S.ExperimentSpec(
        name="unit search",
        task=S.TaskSpec(dataset="digits", model="tiny", steps=50),
        loss=S.LossSpec(order=order, inputs=["x", "y"]),
        search=S.SearchSpec(population=population, generations=generations, sigma0=1.2, seed=1),
    )
    result = experiment_service_pb2.ExperimentResult()
    best = (None, -1.0)
    for g in range(generations):
        fitnesses = []
        thetas = []
        for i in range(population):
            theta = rng.normal(size=length).round(4).tolist()
            diverged = i == population - 1
            fitness = 0.0 if diverged else round(0.5 + 0.1 * g + 0.01 * i, 4)
            candidate = result.candidates.add(
                experiment_id="exp-1",
                generation=g,
                index=i,
                theta=theta,
                status=S.CANDIDATE_STATUS_DIVERGED if diverged else S.CANDIDATE_STATUS_SUCCEEDED,
                fitness=fitness,
                attempts=1,
                trainer_id=f"trainer-{i % 2}",
                metrics=S.EvaluationMetrics(val_accuracy=fitness, val_loss=0.3, steps=50, wall_time_s=1.5, attempts=1),
            )
            candidate.finish_time.FromSeconds(1_700_000_000 + 10 * g + i)
            fitnesses.append(fitness)
            thetas.append(theta)
            if fitness > best[1]:
                best = (theta, fitness)
        top = int(np.argmax(fitnesses))
        result.generations.add(
            generation=g,
            best_fitness=fitnesses[top],
            mean_fitness=float(np.mean(fitnesses)),
            best_theta=thetas[top],
            mean_theta=np.mean(thetas, axis=0).tolist(),
            sigma=1.2 * 0.9**g,
        )
    result.best_theta.extend(best[0])
    result.best_fitness = best[1]
    result.experiment.CopyFrom(
        S.Experiment(
            id="exp-1",
            spec=spec,
            state=S.EXPERIMENT_STATE_SUCCEEDED,
            generation=generations,
            evaluations_done=generations * population,
            evaluations_total=generations * population,
            best_fitness=best[1],
            best_theta=best[0],
        )
    )
    return result


def read_csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    result = make_result()
    comparison = {
        "loss": "best_loss.json",
        "baseline": "cross_entropy",
        "task": {"dataset": "digits", "model": "tiny", "steps": 100},
        "summary": {"loss": {"n": 3, "mean": 0.91, "std": 0.01}, "baseline": {"n": 3, "mean": 0.89, "std": 0.02}},
        "welch": {"t": 1.5, "p_value": 0.12},
    }
    out = results.write_result_folder(result, tmp_path_factory.mktemp("result") / "nested", comparison=comparison)
    return result, out


def test_writes_every_documented_file(folder):
    _, out = folder
    names = {p.name for p in out.iterdir()}
    assert {
        "experiment.json",
        "best_theta.json",
        "best_loss.json",
        "candidates.csv",
        "history.csv",
        "fitness.png",
        "loss_shapes.png",
        "tensorboard",
        "comparison.json",
        "comparison.txt",
    } <= names
    assert not [name for name in names if name.endswith(".tmp")]


def test_best_theta_json_holds_the_best_succeeded_candidate(folder):
    result, out = folder
    record = json.loads((out / "best_theta.json").read_text())
    assert record["theta"] == list(result.best_theta)
    assert record["fitness"] == pytest.approx(0.72)  # generation 2, index 2
    assert (record["generation"], record["index"]) == (2, 2)
    assert record["order"] == 3 and record["inputs"] == ["x", "y"] and record["convention"] == "paper"


def test_best_loss_json_rebuilds_the_same_taylorglo_loss(folder):
    result, out = folder
    from taylorglo_tf import losses

    loaded = losses.load_json(out / "best_loss.json")
    assert isinstance(loaded, losses.TaylorGLOLoss)
    np.testing.assert_allclose(loaded.theta, list(result.best_theta), rtol=1e-6)
    config = json.loads((out / "best_loss.json").read_text())["config"]
    rebuilt = losses.TaylorGLOLoss.from_config(config)
    # Same numbers as the float64 reference loss on a batch.
    y_true = np.eye(10, dtype=np.float32)[[1, 3, 7]]
    y_pred = np.random.default_rng(1).dirichlet(np.ones(10), size=3).astype(np.float32)
    expected = taylor.reference_loss(list(result.best_theta), y_true, y_pred).mean()
    assert float(rebuilt(y_true, y_pred)) == pytest.approx(expected, rel=1e-4)


def test_candidates_csv_has_every_candidate_in_order_with_status_metrics_and_theta(folder):
    result, out = folder
    rows = read_csv(out / "candidates.csv")
    assert len(rows) == len(result.candidates) == 12
    assert [(int(r["generation"]), int(r["index"])) for r in rows] == [
        (c.generation, c.index) for c in result.candidates
    ]
    assert [r["status"] for r in rows[:4]] == ["succeeded", "succeeded", "succeeded", "diverged"]
    for row, candidate in zip(rows, result.candidates):
        assert float(row["fitness"]) == pytest.approx(candidate.fitness)
        assert [float(row[f"theta_{i}"]) for i in range(8)] == pytest.approx(list(candidate.theta))
        assert row["trainer_id"] == candidate.trainer_id
        assert float(row["wall_time_s"]) == 1.5
        assert row["finish_time"].startswith("2023-11-14T")


def test_history_csv_has_best_mean_sigma_and_running_best_per_generation(folder):
    result, out = folder
    rows = read_csv(out / "history.csv")
    assert [int(r["generation"]) for r in rows] == [0, 1, 2]
    for row, summary in zip(rows, result.generations):
        assert float(row["best_fitness"]) == pytest.approx(summary.best_fitness)
        assert float(row["mean_fitness"]) == pytest.approx(summary.mean_fitness)
        assert float(row["sigma"]) == pytest.approx(summary.sigma)
        assert [float(row[f"best_theta_{i}"]) for i in range(8)] == pytest.approx(list(summary.best_theta))
    best_so_far = [float(r["best_so_far"]) for r in rows]
    assert best_so_far == sorted(best_so_far) and best_so_far[-1] == pytest.approx(result.best_fitness)


def test_history_best_so_far_keeps_the_maximum_when_a_generation_gets_worse():
    rows = results.history_rows(
        [
            S.GenerationSummary(generation=1, best_fitness=0.5),
            S.GenerationSummary(generation=0, best_fitness=0.8),
        ]
    )
    assert [(r["generation"], r["best_so_far"]) for r in rows] == [(0, 0.8), (1, 0.8)]


def test_plots_are_png_images(folder):
    _, out = folder
    import matplotlib.image

    for name in ("fitness.png", "loss_shapes.png"):
        image = matplotlib.image.imread(out / name)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image.std() > 0.01  # something is drawn


def test_tensorboard_events_hold_the_history_scalars(folder):
    result, out = folder
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(out / "tensorboard"))
    accumulator.Reload()
    assert set(results.TENSORBOARD_SCALARS) <= set(accumulator.Tags()["scalars"])
    best = [(e.step, e.value) for e in accumulator.Scalars("fitness/best")]
    assert best == [(g.generation, pytest.approx(g.best_fitness)) for g in result.generations]
    sigma = [e.value for e in accumulator.Scalars("cmaes/sigma")]
    assert sigma == pytest.approx([g.sigma for g in result.generations])


def test_each_generation_s_tensorboard_scalars_carry_its_own_finish_time(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = make_result(generations=3)
    finished = [1_700_000_100.25, 1_700_000_460.5]  # generation 2 has no finish time: the time of writing
    for summary, seconds in zip(result.generations, finished):
        summary.finish_time.FromNanoseconds(round(seconds * 4) * 250_000_000)  # exact quarters
    before = time.time()
    results.write_tensorboard(results.history_rows(result.generations), tmp_path)
    after = time.time()
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    for tag in results.TENSORBOARD_SCALARS:
        events = accumulator.Scalars(tag)
        assert [(e.step, e.wall_time) for e in events[:2]] == [(0, finished[0]), (1, finished[1])]
        assert events[2].step == 2 and before <= events[2].wall_time <= after


def test_rewriting_tensorboard_events_leaves_one_event_file(tmp_path):
    history = results.history_rows(make_result(generations=2).generations)
    results.write_tensorboard(history, tmp_path)
    time.sleep(1.1)  # event file names carry the time in seconds
    results.write_tensorboard(history[:1], tmp_path)
    assert len(list(tmp_path.glob("events.out.tfevents.*"))) == 1


def test_comparison_is_written_as_json_and_text(folder):
    _, out = folder
    record = json.loads((out / "comparison.json").read_text())
    assert record["baseline"] == "cross_entropy"
    text = (out / "comparison.txt").read_text()
    assert "best_loss.json vs cross_entropy" in text
    assert "0.9100" in text and "0.8900" in text and "p_value=0.1200" in text


def test_a_tuned_comparison_text_has_one_row_per_comparison_the_choice_and_the_verdict():
    from taylorglo_tf.compare import compare_tuned
    from taylorglo_tf.training import Task
    from tests.test_compare import RateEvaluator, scaled_loss_world

    tuned = compare_tuned(
        "L",
        "B",
        Task(steps=5),
        runs=3,
        tuning_seeds=1,
        evaluator=RateEvaluator(scaled_loss_world),
        loss_name="best_loss.json",
        baseline_name="cross_entropy",
    )
    lines = results.comparison_text(tuned.to_dict()).splitlines()
    plain_row = next(line for line in lines if line.startswith("at the task's learning rate"))
    tuned_row = next(line for line in lines if line.startswith("against the tuned baseline"))
    # baseline lr, loss mean, baseline mean, win in points, p
    assert plain_row.split()[-6:] == ["0.05", "(x1)", "0.9010", "0.8010", "+10.00", f"{tuned.plain.welch.pvalue:.4f}"]
    assert tuned_row.split()[-6:] == ["0.15", "(x3)", "0.9010", "0.9510", "-5.00", f"{tuned.tuned.welch.pvalue:.4f}"]
    assert any(
        line.startswith("baseline learning rate x3, chosen by mean validation accuracy (seeds [3]")
        and "x3 0.9500" in line
        for line in lines
    )
    assert lines[-1] == tuned.verdict() and "learning-rate effect" in lines[-1]


def test_a_measured_loss_scale_is_a_line_of_the_comparison_text():
    record = {
        "loss": "l.json",
        "baseline": "cross_entropy",
        "loss_scale": {"ratio": 9.87654, "definition": "mean |dL/dlogits| relative to cross-entropy"},
    }
    assert "loss scale: 9.8765 x cross-entropy (mean |dL/dlogits| relative to cross-entropy)" in (
        results.comparison_text(record)
    )


def test_a_result_without_any_finished_candidate_writes_tables_but_no_loss_or_plots(tmp_path):
    result = experiment_service_pb2.ExperimentResult()
    result.experiment.id = "exp-empty"
    result.experiment.state = S.EXPERIMENT_STATE_CANCELLED
    out = results.write_result_folder(result, tmp_path)
    record = json.loads((out / "best_theta.json").read_text())
    assert record["theta"] is None and record["generation"] is None
    assert json.loads((out / "experiment.json").read_text())["state"] == "EXPERIMENT_STATE_CANCELLED"
    assert len(read_csv(out / "candidates.csv")) == 0
    assert not (out / "best_loss.json").exists() and not (out / "fitness.png").exists()


def test_rewriting_a_folder_replaces_its_files(tmp_path):
    results.write_result_folder(make_result(generations=2), tmp_path, plots=False, tensorboard=False)
    results.write_result_folder(make_result(generations=1), tmp_path, plots=False, tensorboard=False)
    assert len(read_csv(tmp_path / "history.csv")) == 1


def test_rejects_what_is_not_an_experiment_result(tmp_path):
    with pytest.raises(TypeError, match="ExperimentResult, got Experiment"):
        results.write_result_folder(S.Experiment(), tmp_path)


def test_rejects_a_best_theta_that_does_not_fit_the_loss_form(tmp_path):
    result = make_result(generations=1)
    result.best_theta.append(1.0)
    with pytest.raises(ValueError, match="best_theta has 9 entries; the spec's loss .order=3.* has 8"):
        results.write_result_folder(result, tmp_path)


def test_rejects_an_out_dir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(ValueError, match="is not a directory"):
        results.write_result_folder(make_result(generations=1), path)


def test_importing_results_does_not_import_tensorflow():
    code = "import sys, taylorglo_tf.results; print('tensorflow' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]


def test_writing_a_result_folder_does_not_import_tensorflow(tmp_path):
    """`taylorglo result` stays fast: tables, plots and events need no TensorFlow."""
    code = (
        "import sys\n"
        "sys.path.insert(0, 'tests')\n"
        "from test_results import make_result\n"
        "from taylorglo_tf import results\n"
        f"results.write_result_folder(make_result(), {str(tmp_path)!r})\n"
        "print('tensorflow' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False"]
    assert (tmp_path / "loss_shapes.png").exists() and list((tmp_path / "tensorboard").iterdir())


def _drawn_figure(monkeypatch, plot):
    saved = []
    monkeypatch.setattr(results, "_save_figure", lambda figure, path: saved.append(figure))
    plot()
    (figure,) = saved
    figure.canvas.draw()
    return figure


def _whole(ticks) -> bool:
    inside = [t for t in ticks if 0 <= t <= 1]
    return bool(inside) and all(float(t).is_integer() for t in inside)


def test_plots_of_two_generations_label_whole_generations_only(tmp_path, monkeypatch):
    # Two generations span 0..1, where matplotlib would otherwise put ticks at 0.2, 0.4, ...
    thetas = [(0, taylor.PAPER_MNIST_THETA), (1, taylor.PAPER_MNIST_THETA)]
    figure = _drawn_figure(monkeypatch, lambda: results.plot_loss_shapes(thetas, 3, ("x", "y"), tmp_path / "s.png"))
    colour_bar = next(ax for ax in figure.axes if ax.get_ylabel() == "generation")
    assert _whole(colour_bar.get_yticks()), colour_bar.get_yticks()
    history = [{"generation": g, "best_fitness": 0.5, "mean_fitness": 0.2, "best_so_far": 0.5} for g in (0, 1)]
    (axes,) = _drawn_figure(monkeypatch, lambda: results.plot_fitness(history, tmp_path / "f.png")).axes
    assert _whole(axes.get_xticks()), axes.get_xticks()


# ----------------------------------------------------------------------------- early stopping


def stop(candidate: types_pb2.Candidate, at: int, steps: int, accuracies: list[float], checkpoints: int = 2) -> None:
    """Make ``candidate`` one that early stopping stopped at checkpoint ``at`` (1-based) of ``checkpoints``."""
    candidate.status = S.CANDIDATE_STATUS_STOPPED
    candidate.stopped_at = at
    candidate.fitness = (at - 1 + accuracies[-1]) / checkpoints - 1
    candidate.metrics.steps = steps
    candidate.metrics.val_accuracy = accuracies[-1]
    for index, accuracy in enumerate(accuracies):
        candidate.checkpoints.add(index=index, steps=steps * (index + 1) // len(accuracies), val_accuracy=accuracy)


def early_stopped_result() -> experiment_service_pb2.ExperimentResult:
    """Three generations of four (50 steps each); in generation 1, two stopped: one at the first
    checkpoint (12 steps), one at the second (25 steps); the two that went on reached both."""
    result = make_result()
    result.experiment.spec.search.early_stopping = "successive_halving"
    first, second, *finished = [c for c in result.candidates if c.generation == 1]
    stop(first, at=1, steps=12, accuracies=[0.2])
    stop(second, at=2, steps=25, accuracies=[0.4, 0.5])
    for c in finished:
        c.checkpoints.add(index=0, steps=12, val_accuracy=0.45)
        c.checkpoints.add(index=1, steps=25, val_accuracy=0.55)
    g1 = result.generations[1]
    # as the coordinator summarises it: the mean of the candidates that trained in full
    g1.mean_fitness = sum(c.fitness for c in finished) / len(finished)
    return result


def test_a_stopped_candidate_s_row_says_stopped_with_the_steps_it_trained_its_partial_accuracy_and_checkpoints(
    tmp_path,
):
    result = early_stopped_result()
    out = results.write_result_folder(result, tmp_path, plots=False, tensorboard=False)
    rows = read_csv(out / "candidates.csv")
    with open(out / "candidates.csv", newline="") as handle:
        header = next(csv.reader(handle))
    # the new columns come last: a reader by position of the old ones still works
    assert header[: len(results.CANDIDATE_COLUMNS)] == list(results.CANDIDATE_COLUMNS)
    assert header[-3:] == ["stopped_at", "checkpoint_1_accuracy", "checkpoint_2_accuracy"]
    first, second, went_on = rows[4], rows[5], rows[6]
    assert (first["status"], first["steps"], first["val_accuracy"], first["stopped_at"]) == (
        "stopped",
        "12",
        "0.2",
        "1",
    )
    assert float(first["fitness"]) == pytest.approx(-0.9)
    assert (first["checkpoint_1_accuracy"], first["checkpoint_2_accuracy"]) == ("0.2", "")
    assert (second["status"], second["steps"], second["stopped_at"]) == ("stopped", "25", "2")
    assert (second["checkpoint_1_accuracy"], second["checkpoint_2_accuracy"]) == ("0.4", "0.5")
    assert float(second["fitness"]) == pytest.approx(-0.25)
    assert (went_on["status"], went_on["steps"], went_on["stopped_at"]) == ("succeeded", "50", "")
    assert (went_on["checkpoint_1_accuracy"], went_on["checkpoint_2_accuracy"]) == ("0.45", "0.55")


def test_without_early_stopping_candidates_csv_has_an_empty_stopped_at_column_and_no_checkpoint_columns(folder):
    _, out = folder
    rows = read_csv(out / "candidates.csv")
    assert {r["stopped_at"] for r in rows} == {""}
    assert not [column for column in rows[0] if column.startswith("checkpoint_")]


def test_experiment_json_counts_stopped_candidates_and_training_steps_and_names_the_rule(tmp_path):
    out = results.write_result_folder(early_stopped_result(), tmp_path, plots=False, tensorboard=False)
    record = json.loads((out / "experiment.json").read_text())
    assert record["early_stopping"] == "successive_halving"
    assert record["spec"]["search"]["early_stopping"] == "successive_halving"
    assert record["candidates"] == {"succeeded": 7, "diverged": 3, "stopped": 2}
    assert record["stopped"] == 2
    assert record["training_steps"] == 10 * 50 + 12 + 25


def test_a_stored_experiment_without_the_field_says_its_rule_is_none(folder):
    _, out = folder
    record = json.loads((out / "experiment.json").read_text())
    assert record["early_stopping"] == "none"
    assert record["stopped"] == 0 and record["training_steps"] == 12 * 50


def test_history_counts_each_generation_s_stopped_candidates_and_training_steps(tmp_path):
    result = early_stopped_result()
    out = results.write_result_folder(result, tmp_path, plots=False, tensorboard=False)
    rows = read_csv(out / "history.csv")
    assert [int(r["stopped"]) for r in rows] == [0, 2, 0]
    assert [int(r["training_steps"]) for r in rows] == [200, 12 + 25 + 100, 200]
    assert "trained_mean_fitness" not in rows[0]  # mean_fitness already leaves the stopped out


def test_the_fitness_plot_leaves_stopped_candidates_out_of_the_generation_mean(tmp_path, monkeypatch):
    """A stopped candidate's fitness is a ranking score in [-1, 0]: in the mean it would pull the
    curve below every candidate that trained; the plot draws the mean of those that trained in full."""
    result = early_stopped_result()
    history = results.history_rows(result.generations, result.candidates)
    (axes,) = _drawn_figure(monkeypatch, lambda: results.plot_fitness(history, tmp_path / "f.png")).axes
    mean = next(line for line in axes.get_lines() if line.get_label().startswith("mean of generation"))
    assert mean.get_label() == "mean of generation (stopped early left out)"
    assert list(mean.get_ydata()) == pytest.approx([r["mean_fitness"] for r in history])
    assert min(mean.get_ydata()) > 0


def test_tensorboard_events_count_stopped_candidates_and_training_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = early_stopped_result()
    results.write_tensorboard(results.history_rows(result.generations, result.candidates), tmp_path)
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    assert [e.value for e in accumulator.Scalars("candidates/stopped")] == [0, 2, 0]
    assert [e.value for e in accumulator.Scalars("training/steps")] == [200, 137, 200]
