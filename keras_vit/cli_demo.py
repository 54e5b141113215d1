"""`keras-vit demo`: the README's main job, end to end on real Fashion-MNIST.

Trains a small hybrid ViT (paper section 3.1) on the 60,000 training images,
evaluates it on the 10,000 test images, saves it (`model.keras`), exports it (a
TF Serving SavedModel and a TFLite file), predicts a few test images, and writes
`training_curves.png` and `confusion_matrix.png`. The defaults take 15 to 25
minutes on 2 cores, as the host allows (measured: 14.8 min wall and 90.94% test
accuracy; 23.6 min and 90.74% on a day the host ran each step about 1.5 times
slower; `benchmarks/RESULTS.md`, "Training"); `--quick` about two.
"""

import json
import os
import time

import numpy as np

from keras_vit import atomic, cli_train, plots

# The demo's Transformer and recipe on patches of pixels: the plain ViT that the ablation study, masked
# patch prediction and the Fashion-MNIST benchmark against timm and keras-hub train (their figures were
# measured with it); 13 epochs of it gave 89.4-90.2% in about 15 minutes on 2 CPU cores.
PLAIN_DEFAULTS = dict(
    num_layers=4, hidden_size=64, mlp_dim=256, num_heads=4, patch_size=4, image_size=28,
    epochs=13, batch_size=128, learning_rate=3e-3, weight_decay=0.05, warmup_epochs=1.0,
    label_smoothing=0.1, crop_area_min=1.0, output_dir="demo_output",
    # XLA: on this small model one fused cluster per step beats the plain graph's many small ops.
    jit_compile=True,
)
# The demo puts the paper's hybrid stem (section 3.1) in front of the same Transformer: a 7x7/2
# convolution, a 3x3/2 max pool and one bottleneck unit of width 32 give the 7x7 grid the 4x4 patches
# gave, embedded position by position. It learns faster than patches of pixels: 9 epochs of it (90.94%)
# beat 13 of the plain ViT (89.4-90.2%) in about the same time (benchmarks/RESULTS.md, "Training").
DEMO_DEFAULTS = dict(PLAIN_DEFAULTS, resnet="1", resnet_width=32, patch_size=1, epochs=9)
QUICK = dict(epochs=2, max_train_examples=15_000, max_eval_examples=10_000)


def _parse(argv):
    from absl import flags

    from keras_vit.cli import fill_unset, parse_flags

    def define(values):
        cli_train.define_flags(values, **DEMO_DEFAULTS)
        flags.DEFINE_bool("quick", False, "A ~2 minute run (2 epochs on 15,000 images) to see it work.",
                          flag_values=values)
        flags.DEFINE_integer("predict", 8, "Test images to predict and print.", flag_values=values)
        flags.DEFINE_bool("export", True, "Export a SavedModel and a TFLite model.", flag_values=values)

    values, _ = parse_flags(argv, define, positional=False)
    return fill_unset(values, QUICK) if values.quick else values


def confusion_matrix(labels, predictions, num_classes):
    """Counts `(true, predicted)` pairs: rows are true classes.

    Example:

    >>> confusion_matrix(np.array([0, 1, 1]), np.array([0, 1, 0]), 2).tolist()
    [[1, 0], [1, 1]]
    """
    matrix = np.zeros((num_classes, num_classes), "int64")
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _export(model, output_dir, class_names):
    """A TF Serving SavedModel and a float32 TFLite file of the trained model."""
    from keras_vit import export, litert

    done = {
        "saved_model": os.path.join(output_dir, "saved_model"),
        "tflite": os.path.join(output_dir, "model.tflite"),
    }
    export.export_saved_model(model, done["saved_model"], version=1, class_names=list(class_names), overwrite=True)
    litert.export_tflite(model, done["tflite"], quantize="float32", class_names=list(class_names))
    for kind, path in done.items():
        print(f"export: {kind} -> {path}")
    return done


def demo(argv):
    """Runs the main job; returns 0."""
    from keras_vit import data

    values = _parse(argv)
    start = time.time()
    model, history, results = cli_train.run(values)
    output_dir = values.output_dir
    images, labels = data.load_fashion_mnist("test", values.data_dir)
    if values.max_eval_examples:
        images, labels = images[: values.max_eval_examples], labels[: values.max_eval_examples]
    rgb = np.repeat(images, 3, axis=-1).astype("float32")
    if values.image_size != rgb.shape[1]:
        import tensorflow as tf

        rgb = tf.image.resize(rgb, (values.image_size, values.image_size)).numpy()
    probabilities = model.predict(rgb, batch_size=512, verbose=0)
    predicted = probabilities.argmax(-1)
    classes = data.FASHION_MNIST_CLASSES
    print(f"predictions for the first {values.predict} test images:")
    for i in range(min(values.predict, len(rgb))):
        mark = "ok" if predicted[i] == labels[i] else "WRONG"
        print(f"  test[{i}]: {classes[predicted[i]]:<12} p={probabilities[i, predicted[i]]:.3f}  "
              f"(true: {classes[labels[i]]}) {mark}")
    matrix = confusion_matrix(labels, predicted, len(classes))
    plots.training_curves(history.history, os.path.join(output_dir, "training_curves.png"))
    plots.confusion_matrix(matrix, classes, os.path.join(output_dir, "confusion_matrix.png"),
                           title="Fashion-MNIST test set")
    exported = _export(model, output_dir, classes) if values.export else {}
    summary = {
        "test_accuracy": float(np.mean(predicted == labels)),
        "test_images": int(len(labels)),
        "train_seconds": results["train_seconds"],
        "total_seconds": round(time.time() - start, 1),
        "parameters": results["parameters"],
        "files": {
            "model": os.path.join(output_dir, "model.keras"),
            "training_curves": os.path.join(output_dir, "training_curves.png"),
            "confusion_matrix": os.path.join(output_dir, "confusion_matrix.png"),
            **exported,
        },
    }
    atomic.write_json(os.path.join(output_dir, "demo_summary.json"), summary)
    print(json.dumps(summary, indent=1))
    print(f"keras-vit demo: test accuracy {summary['test_accuracy']:.2%} on {len(labels)} Fashion-MNIST test "
          f"images, {summary['total_seconds'] / 60:.1f} min; outputs in {output_dir}/")
    return 0


main = demo
