"""Figures of stage two (matplotlib, headless): training curves, confusion matrices, the data-efficiency curve."""
from __future__ import annotations

import numpy as np


def confusion_figure(confusion: list[list[int]], class_names: list[str], title: str):
    """A matplotlib figure of a confusion matrix with counts in the cells (rows: true, columns: predicted)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion)
    size = 1.2 + 0.7 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    fig.tight_layout()
    return fig


def curves_figure(history: list[dict], best_epoch: int):
    """A matplotlib figure of the linear head's loss (train, val) and validation accuracy per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(epochs, [h["train_loss"] for h in history], label="train")
    if history and "val_loss" in history[0]:
        left.plot(epochs, [h["val_loss"] for h in history], label="val")
        right.plot(epochs, [h["val_accuracy"] for h in history], color="tab:green")
    for ax in (left, right):
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best (epoch {best_epoch})")
        ax.set_xlabel("epoch")
    left.set_ylabel("cross-entropy")
    left.legend()
    right.set_ylabel("validation accuracy")
    fig.tight_layout()
    return fig


def efficiency_figure(rows: list[dict]):
    """A matplotlib figure of data_efficiency's rows: test accuracy per head against videos per class."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [r["videos_per_class"] for r in rows]
    for name in [k for k in rows[0] if k != "videos_per_class"]:
        ax.plot(xs, [r[name] for r in rows], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("training videos per class")
    ax.set_ylabel("test accuracy")
    ax.legend()
    fig.tight_layout()
    return fig


# `dvc plots show` writes a page that loads Vega from a CDN, so offline every chart is blank. .dvc/config points
# it at this page template instead (plots.html_template, relative to .dvc/): Vega, Vega-Lite and Vega-Embed
# inline (vl-convert's bundle, ~0.9 MB), no {scripts} placeholder, so the page needs no network.
OFFLINE_TEMPLATE = ".dvc/plots/offline.html"
VEGA_LITE_VERSION = "5.21"  # DVC's templates are Vega-Lite 5 specs


def offline_page_template() -> str:
    """The HTML page template for `dvc plots show --html-template` (dvc-render's placeholders {refresh_tag} and
    {plot_divs}) with the Vega libraries inline: charts render without network."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)  # sets window.vega, vegaLite, vegaEmbed
    assert "</script" not in bundle.lower() and "{plot_divs}" not in bundle
    return ("<!DOCTYPE html>\n<html>\n<head>\n{refresh_tag}\n<meta charset=\"utf-8\">\n<title>DVC Plot</title>\n"
            "<style>table { border-spacing: 15px; }</style>\n<script>\n" + bundle + "\n</script>\n</head>\n<body>\n"
            "{plot_divs}\n</body>\n</html>\n")
