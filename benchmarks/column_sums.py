"""A column sum (the gradient of a bias) three ways in TensorFlow: `Sum` over the rows, `BiasAddGrad`,
and the product of a row of ones with the matrix (`keras_vit.normalization.column_sum`).

Shapes are the `(batch * tokens, width)` rows of ViT-Ti/16 at batch 32: the MLP's hidden layer, the
q/k/v projection and the model width. Each figure is the median of `--runs` calls of a
`tf.function` after 3 warm-up calls.

    python benchmarks/column_sums.py
    python benchmarks/column_sums.py --rows 6304 --widths 768,576,192 --runs 20
"""

import argparse

from timing import median_seconds, milliseconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6304)
    parser.add_argument("--widths", default="768,576,192")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()

    import tensorflow as tf

    from keras_vit.normalization import column_sum

    ways = {
        "Sum over the rows": tf.function(lambda x: tf.reduce_sum(x, axis=0)),
        "BiasAddGrad": tf.function(lambda x: tf.raw_ops.BiasAddGrad(out_backprop=x)),
        "product with ones (column_sum)": tf.function(column_sum),
    }
    print(f"float32, median of {args.runs} calls, ms\n")
    print("| shape | " + " | ".join(ways) + " |")
    print("|---|" + "---|" * len(ways))
    for width in (int(w) for w in args.widths.split(",")):
        x = tf.random.normal((args.rows, width))
        seconds = [median_seconds(lambda f=f: f(x).numpy(), args.runs, warmup=3) for f in ways.values()]
        print(f"| {args.rows} x {width} | " + " | ".join(map(milliseconds, seconds)) + " |")


if __name__ == "__main__":
    main()
