"""`keras-vit explain IMAGE... --weights NAME_OR_PATH --out DIR`: the paper's figures for a model.

Per image: `<name>_attention.png` (attention rollout over the image, Figure 6)
and `<name>_heads.png` (the last layer's heads). For the model:
`position_embedding_similarity.png` (Figure 7 centre), `embedding_filters.png`
(Figure 7 left; not for a hybrid, whose embedding does not see pixels, so
explain.json records it as null) and `attention_distance.png` (Figure 7 right,
over the given images). `explain.json` lists the files and each image's
prediction.
"""

import os
import sys

import numpy as np
from absl import flags

from keras_vit import atomic
from keras_vit.cli import parse_flags
from keras_vit.cli_export import _fail, load_classifier

USAGE = "IMAGE... --weights NAME_OR_PATH --out DIR [--components 28]"


def explain(model, images, names, out, class_names=None, components=28):
    """Writes every figure for `images` (a float32 batch as the model takes it) into `out`.

    Args:
        model: a keras_vit model (any head, any size).
        images: array `(n, height, width, channels)`, pixels in [0, 255].
        names: one file-name stem per image.
        out: the output folder (created).
        class_names: optional names of the head's classes, to title the maps.
        components: how many principal components of the filters to draw.

    Returns:
        A dict: `images` (per image: `attention`, `heads` and, with a
        classifier head, `prediction` and `score`) and `model` (figure name to
        path).
    """
    import keras

    from keras_vit import plots, visualize
    from keras_vit.export import outputs_probabilities

    os.makedirs(out, exist_ok=True)
    maps = visualize.attention_map(model, images)
    heads = visualize.last_layer_head_maps(model, images)
    probabilities = None
    if any(layer.name == "head" for layer in model.layers):  # a feature extractor has no prediction
        probabilities = np.asarray(model.predict_on_batch(images))
        if not outputs_probabilities(model):
            probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(probabilities, axis=-1))
    per_image = []
    for index, name in enumerate(names):
        entry = {}
        title = "attention rollout"
        if probabilities is not None:
            best = int(np.argmax(probabilities[index]))
            label = class_names[best] if class_names else str(best)
            entry.update(prediction=label, class_id=best, score=float(probabilities[index, best]))
            title = f"rollout: {label}"
        entry["attention"] = plots.attention_overlay(
            images[index], maps[index], os.path.join(out, f"{name}_attention.png"), title=title
        )
        entry["heads"] = plots.head_maps(images[index], heads[index], os.path.join(out, f"{name}_heads.png"))
        per_image.append({"image": name, **entry})
    figures = {}
    if model.get_layer("posembed_input").embedding() is not None:
        figures["position_embedding_similarity"] = plots.position_similarity(
            visualize.position_embedding_similarity(model),
            model.get_layer("posembed_input").grid_size,
            os.path.join(out, "position_embedding_similarity.png"),
        )
    if visualize.is_hybrid(model):
        figures["embedding_filters"] = None  # a hybrid's embedding reads ResNet features, not pixels
    else:
        filters, explained = visualize.embedding_filter_components(model, components)
        figures["embedding_filters"] = plots.embedding_filters(
            filters, explained, os.path.join(out, "embedding_filters.png")
        )
    figures["attention_distance"] = plots.attention_distance(
        visualize.mean_attention_distance(model, images),
        os.path.join(out, "attention_distance.png"),
        image_size=images.shape[1:3],
    )
    return {"images": per_image, "model": figures}


def _stems(paths):
    """File-name stems, made unique when two images share a name."""
    stems, seen = [], {}
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def main(argv):
    """Runs `keras-vit explain`; returns the exit status."""

    def define(v):
        flags.DEFINE_string("weights", None, "A .keras file, a shipped model (vit_fashion_mnist) or a catalogue name.", flag_values=v)
        flags.DEFINE_string("out", None, "Folder for the PNG files and explain.json.", flag_values=v)
        flags.DEFINE_integer("components", 28, "Principal components of the filters to draw.", flag_values=v)

    values, paths = parse_flags(argv, define, USAGE)
    if not values.weights or not values.out:
        return _fail(f"--weights and --out are required: keras-vit explain {USAGE}")
    if not paths:
        return _fail(f"give at least one image file: keras-vit explain {USAGE}")
    if values.components < 1:
        return _fail(f"--components must be a positive int. Received: --components={values.components}")
    from keras_vit import images as vit_images

    try:
        classifier = load_classifier(values.weights)
    except (ValueError, OSError) as error:
        return _fail(str(error))
    if classifier.keras_model is None:
        return _fail(
            "explain reads the attention inside the model, so it needs a Keras model: a .keras file or a "
            f"catalogue name, not a {classifier.kind} export. Received: --weights={values.weights}"
        )
    height, width, channels = classifier.input_shape
    try:
        batch = vit_images.load_images(paths, (height, width), channels)
    except vit_images.ImageError as error:
        return _fail(str(error))
    report = explain(classifier.keras_model, batch, _stems(paths), values.out,
                     classifier.class_names, values.components)
    report["weights"] = values.weights
    atomic.write_json(os.path.join(values.out, "explain.json"), report)
    for entry in report["images"]:
        guess = f"  ({entry['prediction']}, p={entry['score']:.3f})" if "prediction" in entry else ""
        print(f"{entry['attention']}{guess}\n{entry['heads']}")
    for path in report["model"].values():
        if path is not None:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
