"""What keras_vit's float32-erf GELU gains over `keras.activations.gelu`, in one run.

TensorFlow's exact GELU is `0.5 x erfc(-x / sqrt(2))`; its `erfc` kernel is not vectorised for
bfloat16, and the TF profiler (`benchmarks/op_profile.py`) showed the `Erfc` op taking a fifth of the
busy time of a mixed-bfloat16 forward pass. `keras_vit.layers.gelu` computes `0.5 x (1 + erf(x /
sqrt(2)))` in float32. This script traces the same model twice, once with each GELU (the block
looks the function up when it is traced), and times the two forward passes in turn.

    python benchmarks/gelu_ab.py --variant B/16 --batch 8 --bf16
"""

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="B/16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_vit
    from keras_vit import layers as vit_layers
    from keras_vit.variants import canonical_name

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.bf16 else "float32")
    model = keras_vit.CONSTRUCTORS[canonical_name(args.variant)](weights=None, input_shape=(args.size, args.size, 3))
    keras.mixed_precision.set_global_policy("float32")
    head = model.get_layer("head").kernel  # zero from scratch: give the outputs something to differ by
    head.assign(np.random.default_rng(1).normal(0, 0.02, head.shape).astype("float32"))
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32"))
    ours = vit_layers.gelu
    forwards = {}
    for name, function in (("keras.activations.gelu (TF erfc)", keras.activations.gelu), ("keras_vit gelu (float32 erf)", ours)):
        vit_layers.gelu = function
        forwards[name] = tf.function(lambda images: model(images, training=False))
        outputs = forwards[name](x).numpy()  # traced now, with this GELU
        forwards[name](x)
        if name.startswith("keras_vit"):
            print(f"max abs difference of the class probabilities: {np.abs(outputs - reference).max():.2e}")
        reference = outputs
    vit_layers.gelu = ours
    seconds = {name: [] for name in forwards}
    for _ in range(args.rounds):
        for name, forward in forwards.items():
            times = []
            for _ in range(args.runs):
                start = time.perf_counter()
                forward(x).numpy()
                times.append(time.perf_counter() - start)
            seconds[name].append(statistics.median(times))
    mode = "mixed bfloat16" if args.bf16 else "float32"
    print(f"ViT-{args.variant} at {args.size}, batch {args.batch}, {mode}\n")
    print("| GELU | img/s | speed-up |")
    print("|---|---|---|")
    base = None
    for name, times in seconds.items():
        rate = args.batch / statistics.median(times)
        base = base or rate
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
