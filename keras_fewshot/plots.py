"""Pictures: learning curves of training runs, episodes with a model's predictions, adapted
regression curves, and sequence models' accuracy by instance.

Figures are matplotlib `Figure`s drawn without pyplot (no display, no global state);
`save_png` writes one. `EpisodeImages` puts an episode picture in TensorBoard now and then.
"""

import io
import pathlib
import textwrap

import keras
import numpy as np
import tensorflow as tf

RIGHT, WRONG, UNKNOWN = "#2ca02c", "#d62728", "#7f7f7f"  # query frames: green, red, gray
SUPPORT = "#d9d9d9"  # support frames: light gray


def _figure(width, height, layout="constrained"):
    from matplotlib.figure import Figure  # imported lazily: only pictures need it
    return Figure(figsize=(width, height), layout=layout)


def save_png(figure, path, dpi=100):
    """Writes `figure` as a PNG file (parent folders created)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=dpi)
    return path


def png_bytes(figure, dpi=100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# --- Learning curves ---------------------------------------------------------------------------

def learning_curves(logs, title=None):
    """Training loss (and accuracy, when the runs have it) against training episodes (or
    what the runs' task kind counts instead, e.g. sequences); `logs` (from
    `training.read_history`) are phases of one model drawn one after another (a fine-tuning
    run continues where the run it started from ended)."""
    with_accuracy = any(accuracy is not None for *_, accuracy, _ in logs)
    figure = _figure(10 if with_accuracy else 6, 3.6)
    panels = figure.subplots(1, 2 if with_accuracy else 1, squeeze=False)[0]
    offset = 0
    for i, (label, episodes, loss, accuracy, _) in enumerate(logs):
        x = offset + episodes
        panels[0].plot(x, loss, marker="o", markersize=3, label=label, color=f"C{i}")
        if accuracy is not None:
            panels[1].plot(x, 100 * accuracy, marker="o", markersize=3, color=f"C{i}")
        if i:
            for axes in panels:
                axes.axvline(offset, color="0.6", linestyle=":", linewidth=1)
        offset = x[-1]
    xlabel = "training " + " / ".join(dict.fromkeys(units for *_, units in logs))
    panels[0].set(xlabel=xlabel, ylabel="training loss", yscale="log")
    if with_accuracy:
        panels[1].set(xlabel=xlabel, ylabel="training accuracy (%)")
    from matplotlib.ticker import EngFormatter
    for axes in panels:
        axes.grid(alpha=0.3)
        axes.xaxis.set_major_formatter(EngFormatter(sep=""))  # 150k, not 150000 (runs overlap)
    figure.legend(loc="outside lower center", fontsize=8, frameon=False)
    if title:
        figure.suptitle(title)
    return figure


# --- Episodes with predictions -----------------------------------------------------------------

def _short(name, width=13):
    return textwrap.fill(str(name).replace("_", " "), width, max_lines=3, placeholder="…")


def episode_figure(support_images, support_labels, query_images, probabilities,
                   query_labels=None, class_names=None, title=None, cell=56):
    """One column per class: its support images on top, below them the queries of that class
    (the true class when `query_labels` is given, else the predicted one), each framed green
    when predicted right, red when wrong (titled with the predicted class), gray when the
    truth is unknown, and titled with the predicted class's probability.

    Drawn on one set of axes in pixels (`cell` pixels per image at 100 dpi).
    """
    from matplotlib.patches import Rectangle  # lazily, as _figure
    support_labels = np.asarray(support_labels)
    probabilities = np.asarray(probabilities)
    predictions = probabilities.argmax(-1)
    ways = probabilities.shape[-1]
    names = list(class_names) if class_names is not None else [str(c) for c in range(ways)]
    columns = predictions if query_labels is None else np.asarray(query_labels)
    shots = max(int((support_labels == c).sum()) for c in range(ways))
    depth = max(int((columns == c).sum()) for c in range(ways))
    frame, gap, text_space, margin = 3, 8, 42, 24  # pixels
    box = cell + 2 * frame
    top = 26 if title else 4
    width = max(margin + ways * (box + gap), 7 * len(title or "") + 20)  # room for the title
    height = top + (shots + depth) * (box + text_space) + gap
    dpi = 100
    figure = _figure(width / dpi, height / dpi, layout=None)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set(xlim=(0, width), ylim=(height, 0))
    axes.axis("off")

    def place(row, column, image, color, text, text_color):
        x = margin + column * (box + gap)
        y = top + row * (box + text_space) + text_space + (gap if row >= shots else 0)
        image = np.asarray(image)
        gray = image.shape[-1] == 1
        axes.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0,
                    vmax=255, extent=(x + frame, x + frame + cell, y + frame + cell, y + frame),
                    interpolation="antialiased")
        axes.add_patch(Rectangle((x + frame / 2, y + frame / 2), cell + frame, cell + frame,
                                 fill=False, edgecolor=color, linewidth=frame * 72 / dpi))
        if text:
            axes.text(x + box / 2, y - 2, text, ha="center", va="bottom", fontsize=6.5,
                      linespacing=1.0, color=text_color)

    for c in range(ways):
        for row, index in enumerate(np.flatnonzero(support_labels == c)):
            place(row, c, support_images[index], SUPPORT, _short(names[c]) if row == 0 else "",
                  "black")
        for row, index in enumerate(np.flatnonzero(columns == c)):
            predicted, p = predictions[index], probabilities[index, predictions[index]]
            if query_labels is None:
                color, text = UNKNOWN, f"{p:.2f}"
            elif predicted == c:
                color, text = RIGHT, f"{p:.2f}"
            else:
                color, text = WRONG, f"→ {_short(names[predicted])}\n{p:.2f}"
            place(shots + row, c, query_images[index], color, text, color)
    for row, text in ((0, "support"), (shots, "queries")):
        if row < shots + depth:
            y = top + row * (box + text_space) + text_space + box / 2
            axes.text(margin / 2, y, text, rotation=90, ha="center", va="center", fontsize=8)
    if title:
        axes.text(width / 2, 4, title, ha="center", va="top", fontsize=10)
    return figure


def episode_title(support_labels, query_labels, probabilities):
    """"N-way K-shot: r of q queries right", or "N-way K-shot, q queries" without the truth
    (K as "1-3" when classes have uneven shots)."""
    counts = np.bincount(np.asarray(support_labels))
    shots = str(counts.max()) if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    setting = f"{len(counts)}-way {shots}-shot"
    if query_labels is None:
        return f"{setting}, {len(probabilities)} queries"
    right = int((np.asarray(probabilities).argmax(-1) == np.asarray(query_labels)).sum())
    return f"{setting}: {right} of {len(query_labels)} queries right"


def sinusoid_figure(curves):
    """One panel per task of `tasks.regression.sinusoid_curves`: the truth, the K support points
    and the model's curve after each number of inner steps."""
    count = len(curves["truth"])
    figure = _figure(4 * count, 3.2)
    axes = figure.subplots(1, count, sharey=True, squeeze=False)[0]
    for i, panel in enumerate(axes):
        panel.plot(curves["x"], curves["truth"][i], "k-", lw=2, label="truth")
        for steps, predictions in curves["predictions"].items():
            panel.plot(curves["x"], predictions[i], "--",
                       label=f"{steps} inner step{'s' if steps != 1 else ''}")
        panel.plot(curves["support_x"][i], curves["support_y"][i], "r^", ms=8,
                   label=f"K = {curves['support_x'].shape[1]} support points")
        panel.set_xlabel("x")
        panel.set_title(f"test task {i}")
    axes[0].legend(fontsize=7, loc="lower left")
    return figure


# Santoro et al. (2016), table 1: percent correct at the k-th presentation, 5 classes.
PAPER_ACCURACY_BY_INSTANCE = {
    "MANN (paper)": {1: 36.4, 2: 82.8, 3: 91.0, 4: 92.6, 5: 94.9, 10: 98.1},
    "LSTM (paper)": {1: 24.4, 2: 49.5, 3: 55.3, 4: 61.0, 5: 63.6, 10: 62.5},
}


def accuracy_by_instance_figure(curves, paper=True, title=None):
    """Accuracy (%) against the presentation number of a class in a sequence.

    curves: {label: rows of `tasks.sequences.evaluate_sequences`} (one row per instance), drawn
    with their 95% confidence bands; paper=True adds the paper's 5-class numbers, dashed.
    """
    figure = _figure(6.0, 4.0)
    axes = figure.add_subplot()
    for label, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["instance"])
        x = [r["instance"] for r in rows]
        y = np.array([100 * r["accuracy"] for r in rows])
        ci = np.array([100 * r["ci95"] for r in rows])
        (line,) = axes.plot(x, y, marker="o", label=label)
        axes.fill_between(x, y - ci, y + ci, color=line.get_color(), alpha=0.2, linewidth=0)
    if paper:
        for label, values in PAPER_ACCURACY_BY_INSTANCE.items():
            axes.plot(list(values), list(values.values()), linestyle="--", marker="x",
                      color="gray" if label.startswith("LSTM") else "black", label=label)
    classes = sorted({r["classes"] for rows in curves.values() for r in rows})
    axes.set_xlabel("presentation of the class in the sequence (instance)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 100)
    axes.set_xticks(range(1, 1 + max(r["instance"] for rows in curves.values() for r in rows)))
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8)
    axes.set_title(title or "Accuracy by instance, "
                   f"{'/'.join(map(str, classes))}-class sequences")
    return figure


class EpisodeImages(keras.callbacks.Callback):
    """Every `every` epochs, writes a picture of one fixed episode with the model's current
    predictions to TensorBoard (`log_dir`, image "episode", step = epoch)."""

    def __init__(self, log_dir, episode, query_labels, every=1):
        super().__init__()
        self.log_dir, self.every = str(log_dir), every
        self.episode, self.query_labels = episode, np.asarray(query_labels)
        self._writer = None

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every:
            return
        logits = self.model(self.episode, training=False)
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
        labels = self.episode["support_labels"]
        title = episode_title(labels, self.query_labels, probabilities)
        figure = episode_figure(self.episode["support_images"], labels,
                                self.episode["query_images"], probabilities, self.query_labels,
                                title=f"after epoch {epoch + 1}: {title}")
        image = tf.io.decode_png(png_bytes(figure, dpi=60), channels=3)
        self._writer = self._writer or tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image("episode", image[None], step=epoch)
        self._writer.flush()
