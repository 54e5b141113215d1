r"""Look inside a trained ViT from Python: attention rollout and the paper's Figure 6 and 7.

Example, with the shipped Fashion-MNIST model and the real test images:

    python examples/visualize.py --weights=weights/vit_fashion_mnist.keras \
        --out=runs/figures --num_images=64 --overlays=4

Writes `overlay_<i>.png` (attention rollout over the first --overlays test
images), `position_embedding_similarity.png`, `embedding_filters.png` and
`attention_distance.png` (averaged over --num_images test images).
`keras-vit explain IMAGE... --weights ... --out DIR` does the same for image files.
"""

import os

import keras
import numpy as np
from absl import app, flags

import keras_vit
from keras_vit import data, plots, visualize

flags.DEFINE_string("weights", "weights/vit_fashion_mnist.keras", "A .keras file (a keras_vit model).")
flags.DEFINE_string("out", "runs/figures", "Folder for the PNG files.")
flags.DEFINE_integer("num_images", 64, "Test images for the mean attention distance.")
flags.DEFINE_integer("overlays", 4, "Test images to draw with their attention rollout.")
flags.DEFINE_string("data_dir", None, "Fashion-MNIST folder (default: the Debian package's).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    model = keras.models.load_model(FLAGS.weights)
    height, width, channels = model.input_shape[1:]
    images, labels = data.load_fashion_mnist("test", FLAGS.data_dir)
    images = images[: FLAGS.num_images].astype("float32")
    if channels == 3:
        images = np.repeat(images, 3, axis=-1)
    images = keras.ops.convert_to_numpy(keras.ops.image.resize(images, (height, width)))

    # Tokens and attention probabilities of every block, from the model's own layers.
    intermediates = keras_vit.forward_intermediates(model, images[:1])
    print(f"{len(intermediates['attention'])} blocks; attention of block 0: {intermediates['attention'][0].shape}")

    maps = visualize.attention_map(model, images[: FLAGS.overlays])
    predicted = model.predict(images[: FLAGS.overlays], verbose=0).argmax(-1)
    for i, attention in enumerate(maps):
        title = f"{data.FASHION_MNIST_CLASSES[predicted[i]]} (true: {data.FASHION_MNIST_CLASSES[labels[i]]})"
        print(plots.attention_overlay(images[i], attention, os.path.join(FLAGS.out, f"overlay_{i}.png"), title))

    grid = model.get_layer("posembed_input").grid_size
    similarity = visualize.position_embedding_similarity(model)
    print(plots.position_similarity(similarity, grid, os.path.join(FLAGS.out, "position_embedding_similarity.png")))
    if visualize.is_hybrid(model):
        print("a hybrid: its embedding reads the ResNet stem's features, so there are no pixel filters to draw")
    else:
        components, explained = visualize.embedding_filter_components(model, 28)
        print(plots.embedding_filters(components, explained, os.path.join(FLAGS.out, "embedding_filters.png")))
    distances = visualize.mean_attention_distance(model, images)
    print(plots.attention_distance(distances, os.path.join(FLAGS.out, "attention_distance.png"), (height, width)))
    print("mean attention distance (pixels) per layer:", np.round(distances.mean(axis=1), 2).tolist())


if __name__ == "__main__":
    app.run(main)
