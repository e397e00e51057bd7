"""Draw what TensorBoard shows of one live run (``--tensorboard-dir``) as a PNG, with matplotlib.

Not a TensorBoard screenshot (this machine has no browser): the same event files,
read record by record, drawn as TensorBoard's Scalars, HParams (parallel
coordinates) and Images tabs would show them.

    python docs/gen/tensorboard_view.py TENSORBOARD_DIR/EXPERIMENT_ID docs/images/tensorboard-view.png
"""

from __future__ import annotations

import io
import struct
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image
import matplotlib.pyplot as plt
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins.hparams import metadata


def events(folder: Path) -> list[event_pb2.Event]:
    out = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at + 12 <= len(data):
            (length,) = struct.unpack("<Q", data[at : at + 8])
            out.append(event_pb2.Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return out


def main(run: Path, png: Path) -> None:
    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    images: list[tuple[int, bytes]] = []
    for event in events(run):
        for value in event.summary.value:
            if value.HasField("image"):
                images.append((event.step, value.image.encoded_image_string))
            elif value.tag.startswith(("generation/", "experiment/")):
                scalars[value.tag].append((event.step, value.simple_value))
    trials = []
    for folder in sorted(p for p in run.iterdir() if p.is_dir()):
        record: dict[str, float] = {}
        for event in events(folder):
            for value in event.summary.value:
                if value.tag == metadata.SESSION_START_INFO_TAG:
                    start = metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                    record.update({k: v.number_value for k, v in start.hparams.items()})
                elif value.tag == "candidate/fitness":
                    record["fitness"] = value.simple_value
        trials.append(record)

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [1, 1.5, 1]})
    ax = axes[0]
    for tag in ("generation/best_fitness", "generation/mean_fitness", "experiment/best_fitness"):
        steps, values = zip(*sorted(scalars[tag]))
        ax.plot(steps, values, marker="o", markersize=3, label=tag)
    ax.set(title="Scalars", xlabel="generation (step)", ylabel="validation accuracy")
    ax.legend(fontsize=8)

    ax = axes[1]
    names = sorted(k for k in trials[0] if k.startswith("theta_"))
    colormap = plt.get_cmap("viridis")
    for record in sorted(trials, key=lambda r: r.get("fitness", 0.0)):
        ax.plot(range(len(names)), [record[n] for n in names], color=colormap(record.get("fitness", 0.0)), lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=45, fontsize=8)
    ax.set(title=f"HParams: {len(trials)} trials (theta), colour = candidate/fitness")
    figure.colorbar(plt.cm.ScalarMappable(cmap=colormap), ax=ax, label="candidate/fitness")

    ax = axes[2]
    step, image = max(images)
    ax.imshow(matplotlib.image.imread(io.BytesIO(image), format="png"))
    ax.set(title=f"Images: loss_shape/best, step {step}")
    ax.axis("off")
    figure.suptitle(f"TensorBoard run {run.name}, drawn from its event files (not a screenshot)", fontsize=10)
    figure.tight_layout()
    figure.savefig(png, dpi=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
