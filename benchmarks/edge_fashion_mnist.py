"""The shipped Fashion-MNIST model in every TFLite mode, on all 10,000 real test images.

Prints one Markdown row per mode: file size, median single-image latency,
top-1 agreement with the Keras model, TFLite accuracy, accuracy change and
max abs difference of the probabilities. int8 and selective are calibrated on
the last 300 training images.

    python benchmarks/edge_fashion_mnist.py          # files go to $OUT or /tmp/keras_vit_edge
    python benchmarks/edge_fashion_mnist.py --model OUT/model.keras   # a candidate, before shipping it
"""

import argparse
import os

import keras

from keras_vit import checkpoints, data, litert


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A Fashion-MNIST .keras model (default: the shipped one).")
    args = parser.parse_args()
    path = args.model or checkpoints.shipped_path("vit_fashion_mnist")
    model = keras.models.load_model(path)
    # The images as evaluation feeds them to the model: resized to its input size, grey repeated to RGB.
    size = model.input.shape[1:3]
    calibration, _ = data.eval_arrays(data.load("fashion_mnist", "train")[0].skip(60_000 - 300), size)
    test, test_labels = data.eval_arrays(data.load("fashion_mnist", "test")[0], size)
    out = os.environ.get("OUT", "/tmp/keras_vit_edge")
    print("| mode | size MB | median latency ms | top-1 agreement with Keras | TFLite accuracy | accuracy change | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    print(f"| Keras (`.keras`) | {os.path.getsize(path) / 1e6:.2f} | {litert.keras_latency_ms(model, runs=100):.2f} | | | | |")
    for mode in litert.QUANTIZE_MODES:
        tflite = litert.export_tflite(
            model, os.path.join(out, f"{mode}.tflite"), mode, calibration if mode in litert.CALIBRATED_MODES else None,
            class_names=data.FASHION_MNIST_CLASSES,
        )
        report = litert.verify_tflite(tflite, model, test, test_labels, batch_size=500)
        print(
            f"| {mode} | {os.path.getsize(tflite) / 1e6:.2f} | {litert.tflite_latency_ms(tflite, runs=100):.2f} | "
            f"{100 * report['top1_agreement']:.2f}% | {100 * report['tflite_accuracy']:.2f}% | "
            f"{-100 * report['accuracy_drop']:+.2f} | {report['max_abs_diff']:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
