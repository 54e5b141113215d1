"""Turns a finished Fashion-MNIST training run into the shipped model file, and prints its SHIPPED entry.

    python weights/ship.py --model OUT/model.keras --output weights/vit_fashion_mnist.keras

The model is loaded without its compile state and saved again, so the file
holds the architecture and the weights but no optimizer state (a third of the
size). The class names go beside it (`<output>.labels.txt`). Then the saved
file itself is loaded into a fresh model and evaluated on the 10,000 real test
images; its sha256, parameter count and that accuracy are what
`keras_vit.checkpoints.SHIPPED` records and `tests/test_shipped.py` checks.
"""

import json
import os

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS


def define_flags():
    """Defined when run as a script only, so importing ship() adds nothing to the global flags."""
    flags.DEFINE_string("model", None, "The training run's model.keras.", required=True)
    flags.DEFINE_string("output", None, "The .keras file to write.", required=True)
    flags.DEFINE_string("data_dir", None, "Folder of the Fashion-MNIST idx files (default: the Debian package's).")


def ship(model_path, output, data_dir=None):
    """Writes `output` (+ labels) from `model_path`; returns sha256, parameters and test accuracy of the file."""
    import keras

    from keras_vit import atomic, data
    from keras_vit.download import sha256_of
    from keras_vit.export import write_labels

    if not output.endswith(".keras"):
        raise ValueError(f"--output must be a .keras file. Received: --output={output}")
    model = keras.models.load_model(model_path, compile=False)
    if model.output.shape[-1] != len(data.FASHION_MNIST_CLASSES):
        raise ValueError(
            f"Expected a 10-class Fashion-MNIST model. Received: {model_path} with output shape {model.output.shape}"
        )
    atomic.write_with(output, model.save)
    write_labels(output, data.FASHION_MNIST_CLASSES)
    shipped = keras.models.load_model(output)
    # The test images as the training run's final evaluation fed them (resized to the input size).
    images, labels = data.eval_arrays(data.load("fashion_mnist", "test", data_dir)[0], shipped.input.shape[1:3],
                                      shipped.input.shape[-1])
    predicted = shipped.predict(images, batch_size=1000, verbose=0).argmax(-1)
    return dict(
        file=os.path.basename(output), bytes=os.path.getsize(output), sha256=sha256_of(output),
        parameters=shipped.count_params(), test_accuracy=round(float(np.mean(predicted == labels)), 4),
    )


def main(argv):
    del argv
    print(json.dumps(ship(FLAGS.model, FLAGS.output, FLAGS.data_dir), indent=1))


if __name__ == "__main__":
    define_flags()
    app.run(main)
