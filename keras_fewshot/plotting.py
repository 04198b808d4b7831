"""Figures for model cards. Needs matplotlib (`pip install -e ".[plot]"`), imported lazily."""

import pathlib

# Santoro et al. (2016), table 1: percent correct at the k-th presentation, 5 classes.
PAPER_ACCURACY_BY_INSTANCE = {
    "MANN (paper)": {1: 36.4, 2: 82.8, 3: 91.0, 4: 92.6, 5: 94.9, 10: 98.1},
    "LSTM (paper)": {1: 24.4, 2: 49.5, 3: 55.3, 4: 61.0, 5: 63.6, 10: 62.5},
}


def plot_accuracy_by_instance(curves, path, paper=True, title=None):
    """Writes a PNG of accuracy (%) against the presentation number; returns the path.

    curves: {label: rows of `evaluation.evaluate_sequences`} (one row per instance), drawn
    with their 95% confidence bands; paper=True adds the paper's 5-class numbers, dashed.
    """
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    figure = Figure(figsize=(6.0, 4.0), dpi=120)
    axes = figure.add_subplot()
    for label, rows in curves.items():
        rows = sorted(rows, key=lambda r: r["instance"])
        x = [r["instance"] for r in rows]
        y = [100 * r["accuracy"] for r in rows]
        ci = [100 * r["ci95"] for r in rows]
        (line,) = axes.plot(x, y, marker="o", label=label)
        axes.fill_between(x, [a - c for a, c in zip(y, ci)], [a + c for a, c in zip(y, ci)],
                          color=line.get_color(), alpha=0.2, linewidth=0)
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
    figure.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
