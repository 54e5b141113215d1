"""This machine's matmul ceiling: GFLOP/s of a large square matmul in TensorFlow, float32 and bfloat16.

A ViT is almost all matrix multiplication, so images per second times GFLOP per image, divided by
this rate, is the share of the ceiling a model reaches.

    python benchmarks/ceiling.py [--size 2048] [--runs 20]
"""

import argparse

from timing import median_seconds


def matmul_gflops(size=2048, dtype="float32", runs=20, warmup=3):
    """Median GFLOP/s of `(size, size) @ (size, size)` in a compiled `tf.function`."""
    import tensorflow as tf

    a = tf.random.uniform((size, size), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.cast(tf.matmul(x, y)[:1, :1], tf.float32)))
    return 2 * size**3 / median_seconds(lambda: matmul(a, b).numpy(), runs, warmup) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    for dtype in ("float32", "bfloat16"):
        print(f"{dtype}: {matmul_gflops(args.size, dtype, args.runs):.0f} GFLOP/s ({args.size}x{args.size} matmul)")


if __name__ == "__main__":
    main()
