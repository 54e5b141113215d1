"""PNG figures (matplotlib, no screen needed): the analyses of `keras_vit.visualize`, training curves and confusion matrices."""

import math

import numpy as np

from keras_vit import atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path):
    """Writes the figure to a temporary file beside `path`, then renames it into place."""
    try:
        atomic.write_with(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    finally:
        _pyplot().close(figure)
    return path


def _as_image(image):
    image = np.asarray(image, dtype="float32")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    return np.clip(image / 255.0, 0.0, 1.0)


def attention_overlay(image, attention, path, title="attention rollout"):
    """Draws an image beside itself with an image-sized attention map over it (Figure 6)."""
    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(6, 3.2))
    axes[0].imshow(_as_image(image))
    axes[0].set_title("input")
    axes[1].imshow(_as_image(image) * (0.25 + 0.75 * np.asarray(attention)[..., None]))
    axes[1].imshow(attention, cmap="jet", alpha=0.35)
    axes[1].set_title(title)
    for axis in axes:
        axis.axis("off")
    figure.tight_layout()
    return _save(figure, path)


def head_maps(image, maps, path):
    """Draws the last layer's per-head maps over the image."""
    plt = _pyplot()
    heads = len(maps)
    columns = min(heads, 6)
    rows = math.ceil(heads / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(2 * columns, 2 * rows), squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index < heads:
            axis.imshow(_as_image(image))
            axis.imshow(maps[index], cmap="jet", alpha=0.5)
            axis.set_title(f"head {index}", fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def position_similarity(similarity, grid_size, path):
    """Draws, at each patch's place, its cosine similarity with every other patch (Figure 7, centre)."""
    plt = _pyplot()
    gh, gw = grid_size
    figure, axes = plt.subplots(gh, gw, figsize=(max(gw, 4) * 0.6, max(gh, 4) * 0.6), squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.imshow(similarity[index].reshape(gh, gw), cmap="viridis", vmin=-1, vmax=1)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.suptitle("position embedding similarity", fontsize=9)
    return _save(figure, path)


def embedding_filters(components, explained, path):
    """Draws principal components of the patch-embedding filters as RGB patches (Figure 7, left)."""
    plt = _pyplot()
    count = len(components)
    columns = min(count, 7)
    rows = math.ceil(count / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(columns * 0.9, rows * 1.0), squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index < count:
            patch = components[index]
            patch = (patch - patch.min()) / max(patch.max() - patch.min(), 1e-12)
            axis.imshow(patch if patch.shape[-1] == 3 else patch[..., 0], cmap=None if patch.shape[-1] == 3 else "gray")
            axis.set_title(f"{100 * explained[index]:.1f}%", fontsize=6)
    figure.suptitle("RGB embedding filters (first principal components)", fontsize=8)
    return _save(figure, path)


def attention_distance(distances, path, image_size=None):
    """Scatter of mean attention distance per head against depth (Figure 7, right)."""
    plt = _pyplot()
    layers, heads = distances.shape
    figure, axis = plt.subplots(figsize=(4.5, 3.5))
    for head in range(heads):
        axis.scatter(np.arange(layers), distances[:, head], s=12, label=f"head {head}")
    axis.set_xlabel("network depth (layer)")
    axis.set_ylabel("mean attention distance (pixels)")
    if image_size:
        axis.set_ylim(0, max(image_size))
    if heads <= 8:
        axis.legend(fontsize=6)
    figure.tight_layout()
    return _save(figure, path)


def training_curves(history, path):
    """Writes loss and accuracy curves (train and test) to a PNG."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history["loss"]) + 1)
    for ax, key in zip(axes, ("loss", "accuracy")):
        ax.plot(epochs, history[key], "o-", label="train")
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], "s-", label="test")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(matrix, class_names, path, title="test set"):
    """Writes a confusion matrix with counts (rows: true classes) and the accuracy to a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(matrix, cmap="Blues")
    ticks = np.arange(len(class_names))
    ax.set_xticks(ticks, class_names, rotation=45, ha="right")
    ax.set_yticks(ticks, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)
    ax.set_title(f"{title}: accuracy {accuracy:.2%}")
    threshold = matrix.max() / 2
    for i in ticks:
        for j in ticks:
            ax.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.tight_layout()
    return _save(fig, path)
