"""How inference time grows with image size (224 -> 384 -> 512), keras_vit next to timm, with a plot.

Tokens grow with the square of the side, so the matmuls grow with it too, and the attention term
(tokens squared) grows with its fourth power. Each size is timed in turns, as in inference.py; the
plot shows milliseconds per image against image size, with the FLOP count scaled from the first size
for reference.

    python benchmarks/scaling.py --variant Ti/16 --sizes 224,384,512 --batch 1 --plot benchmarks/scaling.png
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import inference  # noqa: E402
import peers  # noqa: E402

from keras_vit.variants import canonical_name  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="Ti/16")
    parser.add_argument("--sizes", default="224,384,512")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--plot", default="benchmarks/scaling.png")
    args = parser.parse_args()

    import keras_vit

    timm = peers.TimmWorker()
    sizes = [int(s) for s in args.sizes.split(",")]
    milliseconds = {"keras_vit": [], "keras_vit (XLA)": [], "timm (PyTorch)": []}
    print(f"ViT-{args.variant}, batch {args.batch}, float32\n")
    print("| size | tokens | GFLOP/image | keras_vit ms/image | keras_vit (XLA) ms/image | timm ms/image "
          "| best keras_vit / timm speed |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        model = keras_vit.CONSTRUCTORS[canonical_name(args.variant)](weights=None, input_shape=(size, size, 3))
        times = {name: [] for name in milliseconds}
        for _ in range(args.rounds):
            times["keras_vit"].append(peers.keras_median_seconds(model, args.batch, args.runs, args.warmup))
            times["keras_vit (XLA)"].append(
                peers.keras_median_seconds(model, args.batch, args.runs, args.warmup, jit_compile=True))
            times["timm (PyTorch)"].append(
                timm.median_seconds(args.variant, size, args.batch, args.runs, args.warmup))
        for name in milliseconds:
            milliseconds[name].append(1000 * statistics.median(times[name]) / args.batch)
        plain, xla, theirs = (milliseconds[name][-1] for name in milliseconds)
        tokens = (size // model.get_layer("embedding").patch_size) ** 2 + 1
        print(f"| {size} | {tokens} | {inference.gflop_per_image(args.variant, size):.1f} | {plain:.1f} | "
              f"{xla:.1f} | {theirs:.1f} | {theirs / min(plain, xla):.2f}x |", flush=True)
    timm.close()
    if args.plot:
        _plot(args, sizes, milliseconds)
        print(f"\nplot: {args.plot}")


def _plot(args, sizes, milliseconds):
    from keras_vit import plots

    plt = plots._pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for name, values in milliseconds.items():
        axis.plot(sizes, values, "o-", label=name)
    flops = [inference.gflop_per_image(args.variant, s) for s in sizes]
    reference = [milliseconds["keras_vit"][0] * f / flops[0] for f in flops]
    axis.plot(sizes, reference, "k--", linewidth=0.8, label="FLOPs (scaled to keras_vit at the first size)")
    axis.set_xlabel("image size (pixels per side)")
    axis.set_ylabel("ms per image")
    axis.set_title(f"ViT-{args.variant}, batch {args.batch}, float32", fontsize=9)
    axis.legend(fontsize=7)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    plots._save(figure, args.plot)


if __name__ == "__main__":
    main()
