"""Training speed of keras_vit next to timm (PyTorch CPU) and keras-hub's ViT, in one run.

One step is a forward and backward pass and an AdamW update with clipping at global norm 1 on a
random batch: Keras' `AdamW` for keras-hub, keras_vit's own (`keras_vit.optimizers.AdamW`, fused
updates, built at compile time as the recipes do) for keras_vit, `torch.optim.AdamW` for timm. The implementations take turns, round after round; the figure is the median over
rounds of each round's median step time. Peak memory is each process's maximum RSS (the timm
worker's is its own; keras_vit and keras-hub share this process, so theirs is measured with
`--only`, one implementation per run). Each Keras model is timed twice, with its train step
XLA-compiled and without (`model.compile(jit_compile="auto")`, Keras' default, which is no XLA on
CPU-only machines); `--xla` keeps one of the two.

    python benchmarks/training.py --variant Ti/16 --size 224 --batch 32 --rounds 3
    python benchmarks/training.py --only keras_vit     # peak RSS of keras_vit alone
    python benchmarks/training.py --variant fmnist     # the demo's Fashion-MNIST model: 28x28, batch 128
    python benchmarks/training.py --bf16               # mixed bfloat16 against timm under bfloat16 autocast
    python benchmarks/training.py --only keras_vit --xla off --inter_op 1   # TensorFlow's threads between ops
"""

import argparse
import functools
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402
from timing import take_turns  # noqa: E402



def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="Ti/16", help="a variant, or fmnist for the demo's model")
    parser.add_argument("--size", type=int, default=None, help="default 224 (28 for fmnist)")
    parser.add_argument("--batch", type=int, default=None, help="default 32 (128 for fmnist)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", choices=["keras_vit", "keras-hub", "timm"], default=None)
    parser.add_argument("--no-keras-hub", action="store_true", help="skip keras-hub (not installed)")
    parser.add_argument("--xla", choices=["both", "on", "off"], default="both",
                        help="time the Keras train steps with XLA, without, or both ways")
    parser.add_argument("--bf16", action="store_true",
                        help="mixed bfloat16: Keras' mixed_bfloat16 policy, timm's forward pass under autocast")
    parser.add_argument("--inter_op", type=int, default=0,
                        help="threads TensorFlow runs independent ops on (0: its default, one per core); "
                             "the Keras contenders only")
    args = parser.parse_args()
    demo = args.variant == "fmnist"
    args.size = args.size or (28 if demo else 224)
    args.batch = args.batch or (128 if demo else 32)
    classes = 10 if demo else 1000

    import keras
    import tensorflow as tf

    import keras_vit

    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)  # before the first op runs
    if args.bf16:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")

    names = [args.only] if args.only else ["keras_vit"] + ([] if args.no_keras_hub else ["keras-hub"]) + ["timm"]
    contenders = {}
    step = dict(batch=args.batch, runs=args.runs, warmup=args.warmup, classes=classes)
    modes = {"both": (False, True), "on": (True,), "off": (False,)}[args.xla]

    def add_keras(name, build):
        for xla in modes:
            model = build()  # one model per mode: a model compiles its train step once
            contenders[name + (" (XLA)" if xla else "")] = functools.partial(
                peers.keras_train_step_seconds, model, jit_compile=xla, ours=name == "keras_vit", **step)

    if "keras_vit" in names:
        add_keras("keras_vit", lambda: keras_vit.ViT(**peers.architecture(args.variant),
                                                     input_shape=(args.size, args.size, 3), classes=classes))
    if "keras-hub" in names:
        add_keras("keras-hub", lambda: peers.keras_hub_classifier(args.variant, args.size, classes))
    timm = peers.TimmWorker() if "timm" in names else None
    if timm is not None:
        contenders["timm (PyTorch)"] = lambda: timm.median_seconds(
            args.variant, args.size, args.batch, args.runs, args.warmup, classes=classes, bf16=args.bf16,
            train=True)
    rate = {name: args.batch / seconds for name, seconds in take_turns(contenders, args.rounds).items()}
    peak = {name: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 for name in contenders}
    if timm is not None:
        peak["timm (PyTorch)"] = timm.peak_rss / 2**20
        timm.close()
    shared = "" if args.only else " (shared by keras_vit and keras-hub: use --only)"
    arch = peers.FASHION_MNIST
    title = (f"the Fashion-MNIST demo model ({arch['num_layers']}x{arch['hidden_size']}, MLP {arch['mlp_dim']}, "
             f"patch {arch['patch_size']})") if demo else f"ViT-{args.variant}"
    print(f"{title} at {args.size}, batch {args.batch}, AdamW, {'mixed bfloat16' if args.bf16 else 'float32'}\n")
    print(f"| implementation | img/s | keras_vit's best / this | peak RSS MB{shared} |")
    print("|---|---|---|---|")
    ours = max((r for name, r in rate.items() if name.startswith("keras_vit")), default=None)
    for name, images_per_second in rate.items():
        ratio = f"{ours / images_per_second:.2f}x" if ours else ""
        print(f"| {name} | {images_per_second:.2f} | {ratio} | {peak[name]:.0f} |")


if __name__ == "__main__":
    main()
