"""Does mixed bfloat16 change predictions? The shipped Fashion-MNIST model on all 10,000 real test images.

Builds the same architecture under the `mixed_bfloat16` policy, copies the float32 weights into it,
and reports the top-1 agreement with float32, both accuracies and the max abs difference of the
probabilities.

    python benchmarks/bf16_agreement.py
    python benchmarks/bf16_agreement.py --model OUT/model.keras   # a candidate, before shipping it
"""

import argparse

import keras
import numpy as np

import keras_vit
from keras_vit import checkpoints, data, loading


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="A Fashion-MNIST .keras model (default: the shipped one).")
    args = parser.parse_args()
    fp32 = keras.models.load_model(args.model or checkpoints.shipped_path("vit_fashion_mnist"))
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    bf16 = keras_vit.ViT(**loading.model_architecture(fp32), input_shape=fp32.input.shape[1:],
                         classes=fp32.output.shape[-1])
    keras.mixed_precision.set_global_policy("float32")
    bf16.set_weights(fp32.get_weights())
    images, labels = data.eval_arrays(data.load("fashion_mnist", "test")[0], fp32.input.shape[1:3])
    p32 = fp32.predict(images, batch_size=500, verbose=0)
    p16 = np.asarray(bf16.predict(images, batch_size=500, verbose=0), "float32")
    print(f"top-1 agreement bf16 vs fp32: {np.mean(p32.argmax(-1) == p16.argmax(-1)):.2%}; "
          f"accuracy fp32 {np.mean(p32.argmax(-1) == labels):.2%}, bf16 {np.mean(p16.argmax(-1) == labels):.2%}; "
          f"max abs diff of probabilities {np.max(np.abs(p32 - p16)):.3f}")


if __name__ == "__main__":
    main()
