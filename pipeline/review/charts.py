"""Charts as inline SVG, drawn by matplotlib on the server: no script, nothing fetched."""
import io
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("Agg")  # no display: render to files only
import matplotlib.pyplot as plt  # noqa: E402

matplotlib.rcParams["svg.hashsalt"] = "mnist-mxnet"  # the same chart, the same SVG ids
matplotlib.rcParams["svg.fonttype"] = "none"  # text stays text (searchable, small)


def _svg(figure) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight",  # no RDF metadata block
                   metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # inline: no XML prolog or doctype


def training_curves(runs: Dict[str, Dict[str, List[float]]]) -> str:
    """Loss and accuracy per epoch, train (dashed) and validation (solid); several runs
    overlaid by label, one colour per run in both charts."""
    figure, (loss, accuracy) = plt.subplots(1, 2, figsize=(9, 3.2))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (label, series) in enumerate(runs.items()):
        epochs = series.get("epoch", [])
        prefix = f"{label} " if len(runs) > 1 else ""
        colour = palette[index % len(palette)] if len(runs) > 1 else None
        for axis, metric in ((loss, "loss"), (accuracy, "accuracy")):
            for split, style in (("train", "--"), ("validation", "-")):
                values = series.get(f"{split}_{metric}")
                if values:
                    axis.plot(epochs[:len(values)], values, style, marker=".", color=colour,
                              label=f"{prefix}{split}")
    for axis, title in ((loss, "loss"), (accuracy, "accuracy")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize="small")
    return _svg(figure)


def confusion_matrix(matrix: Dict[str, Dict[str, int]]) -> str:
    """The confusion matrix as a heat map: rows the true digit, columns the predicted one."""
    labels: Sequence[str] = sorted(matrix, key=lambda x: int(x) if x.isdigit() else x)
    values = [[matrix[t].get(p, 0) for p in labels] for t in labels]
    figure, axis = plt.subplots(figsize=(4.6, 4.2))
    image = axis.imshow(values, cmap="Blues")
    peak = max(max(row) for row in values) or 1
    for i, row in enumerate(values):
        for j, count in enumerate(row):
            axis.text(j, i, str(count), ha="center", va="center", fontsize=7,
                      color="white" if count > peak / 2 else "black")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _svg(figure)


def objective_by_parameter(metric: str, trials, scales: Dict[str, str]) -> str:
    """The objective against each tuned hyperparameter, one panel each; ``trials``: (values,
    objective, whether best); the best trial drawn as a star."""
    names = list(scales)
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3), squeeze=False,
                                sharey=True)
    for axis, name in zip(axes[0], names):
        positions: List[float]
        if scales[name] == "Categorical":  # categories in the order first seen, as positions
            labels = [str(v[name]) for v, _, _ in trials]
            order = list(dict.fromkeys(labels))
            positions = [float(order.index(label)) for label in labels]
            axis.set_xticks(range(len(order)), order)
        else:
            positions = [float(v[name]) for v, _, _ in trials]
            if scales[name] in ("Logarithmic", "ReverseLogarithmic"):
                axis.set_xscale("log")
        for x, (_, objective, best) in zip(positions, trials):
            axis.plot(x, objective, "*" if best else "o", markersize=12 if best else 6,
                      color="#d62728" if best else "#1f77b4")
        axis.set_xlabel(name)
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    return _svg(figure)
