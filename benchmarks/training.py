"""Training speed of keras_vit next to timm (PyTorch CPU) and keras-hub's ViT, in one run.

One step is a forward and backward pass and an AdamW update with clipping at global norm 1 on a
random batch. The implementations take turns, round after round; the figure is the median over
rounds of each round's median step time. Peak memory is each process's maximum RSS (the timm
worker's is its own; keras_vit and keras-hub share this process, so theirs is measured with
`--only`, one implementation per run).

    python benchmarks/training.py --variant Ti/16 --size 224 --batch 32 --rounds 3
    python benchmarks/training.py --only keras_vit     # peak RSS of keras_vit alone
"""

import argparse
import os
import resource
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402

from keras_vit.variants import canonical_name  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="Ti/16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", choices=["keras_vit", "keras-hub", "timm"], default=None)
    args = parser.parse_args()

    import keras_vit

    names = [args.only] if args.only else ["keras_vit", "keras-hub", "timm"]
    contenders = {}
    if "keras_vit" in names:
        ours = keras_vit.CONSTRUCTORS[canonical_name(args.variant)](
            weights=None, input_shape=(args.size, args.size, 3))
        contenders["keras_vit"] = lambda: peers.keras_train_step_seconds(ours, args.batch, args.runs, args.warmup)
    if "keras-hub" in names:
        hub = peers.keras_hub_classifier(args.variant, args.size)
        contenders["keras-hub"] = lambda: peers.keras_train_step_seconds(hub, args.batch, args.runs, args.warmup)
    timm = peers.TimmWorker() if "timm" in names else None
    if timm is not None:
        contenders["timm (PyTorch)"] = lambda: timm.median_seconds(
            args.variant, args.size, args.batch, args.runs, args.warmup, train=True)
    seconds = {name: [] for name in contenders}
    for _ in range(args.rounds):
        for name, measure in contenders.items():
            seconds[name].append(measure())
    rate = {name: args.batch / statistics.median(times) for name, times in seconds.items()}
    peak = {name: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 for name in contenders}
    if timm is not None:
        peak["timm (PyTorch)"] = timm.peak_rss / 2**20
        timm.close()
    shared = "" if args.only else " (shared by keras_vit and keras-hub: use --only)"
    print(f"ViT-{args.variant} at {args.size}, batch {args.batch}, AdamW, float32\n")
    print(f"| implementation | img/s | keras_vit / this | peak RSS MB{shared} |")
    print("|---|---|---|---|")
    for name, images_per_second in rate.items():
        ratio = f"{rate['keras_vit'] / images_per_second:.2f}x" if "keras_vit" in rate else ""
        print(f"| {name} | {images_per_second:.2f} | {ratio} | {peak[name]:.0f} |")


if __name__ == "__main__":
    main()
