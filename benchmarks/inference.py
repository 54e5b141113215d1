"""Inference speed of keras_vit next to timm (PyTorch CPU) and keras-hub's ViT, in one run.

For every (variant, image size, batch) the implementations take turns, round after round, each
timing `--runs` forward passes after warm-up; the figure is the median over rounds of each round's
median. Random weights, float32 unless `--bf16`. Prints a Markdown table with images per second,
GFLOP/s, the share of this machine's matmul ceiling (benchmarks/ceiling.py) and the ratio of
keras_vit to each peer.

    python benchmarks/inference.py --variants Ti/16,B/16 --batches 1,8 --sizes 224 --rounds 5
"""

import argparse
import functools
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ceiling  # noqa: E402
import peers  # noqa: E402
from timing import take_turns  # noqa: E402

from keras_vit.variants import VARIANTS, canonical_name  # noqa: E402


def gflop_per_image(variant, image_size):
    """Forward GFLOP of one image: patch embedding, and per block the q/k/v/out and MLP matmuls and
    the two attention matmuls (a multiply-add counts as 2)."""
    row = VARIANTS[canonical_name(variant)]
    d, m, p = row["hidden_size"], row["mlp_dim"], row["patch_size"]
    patches = (image_size // p) ** 2
    tokens = patches + 1
    block = 2 * tokens * (4 * d * d + 2 * d * m) + 2 * 2 * tokens * tokens * d
    return (2 * patches * p * p * 3 * d + row["num_layers"] * block) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="Ti/16,B/16")
    parser.add_argument("--sizes", default="224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--bf16", action="store_true", help="mixed bfloat16 (Keras policy, torch autocast)")
    parser.add_argument("--no-timm", action="store_true")
    parser.add_argument("--no-keras-hub", action="store_true")
    args = parser.parse_args()

    import keras

    import keras_vit

    if args.bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    peak = ceiling.matmul_gflops(dtype="bfloat16" if args.bf16 else "float32")
    timm = None if args.no_timm else peers.TimmWorker()
    print(f"matmul ceiling: {peak:.0f} GFLOP/s ({'bfloat16' if args.bf16 else 'float32'})\n")
    print("| variant | size | batch | implementation | img/s | GFLOP/s | share of ceiling | keras_vit / this |")
    print("|---|---|---|---|---|---|---|---|")
    for variant in args.variants.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            ours = keras_vit.CONSTRUCTORS[canonical_name(variant)](weights=None, input_shape=(size, size, 3))
            contenders = {
                "keras_vit": lambda b, m=ours: peers.keras_median_seconds(m, b, args.runs, args.warmup),
                "keras_vit (XLA)": lambda b, m=ours: peers.keras_median_seconds(m, b, args.runs, args.warmup, True),
            }
            if not args.no_keras_hub:
                hub = peers.keras_hub_classifier(variant, size)
                contenders["keras-hub"] = lambda b, m=hub: peers.keras_median_seconds(m, b, args.runs, args.warmup)
                contenders["keras-hub (XLA)"] = (
                    lambda b, m=hub: peers.keras_median_seconds(m, b, args.runs, args.warmup, True))
            if timm is not None:
                contenders["timm (PyTorch)"] = lambda b, v=variant, s=size: timm.median_seconds(
                    v, s, b, args.runs, args.warmup, bf16=args.bf16)
            for batch in (int(b) for b in args.batches.split(",")):
                turns = {name: functools.partial(measure, batch) for name, measure in contenders.items()}
                rate = {name: batch / seconds for name, seconds in take_turns(turns, args.rounds).items()}
                best_ours = max(rate["keras_vit"], rate["keras_vit (XLA)"])
                flops = gflop_per_image(variant, size)
                for name, images_per_second in rate.items():
                    ratio = "" if name.startswith("keras_vit") else f"{best_ours / images_per_second:.2f}x"
                    print(f"| {variant} | {size} | {batch} | {name} | {images_per_second:.2f} | "
                          f"{images_per_second * flops:.0f} | {images_per_second * flops / peak:.0%} | {ratio} |",
                          flush=True)
    if timm is not None:
        timm.close()


if __name__ == "__main__":
    main()
