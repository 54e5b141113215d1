"""Which library runs the matrix products of keras_vit's XLA-compiled steps on the CPU, in one run.

XLA's CPU compiler emits its own code for matrix products unless `XLA_FLAGS` hands them to a
library: YNNPACK, XNNPACK or oneDNN. XLA reads `XLA_FLAGS` once per process, so each setting runs
in a worker process of its own, with the same model (same seed, so the same weights) and the same
batch; the plain graph (no XLA, TensorFlow's oneDNN kernels op by op) and timm (PyTorch) take part
too. The contenders take turns round after round, each timing `--runs` calls after warm-up; the
figure is the median over rounds of each round's median. Before timing, each worker's outputs (the
probabilities of the batch, or the losses of the first training steps) are compared with those of
the first setting listed, so a setting that is fast because it computes something else shows up.

    python benchmarks/xla_dots.py --variant Ti/16 --batch 32 --mode train --rounds 5
    python benchmarks/xla_dots.py --variant B/16 --batch 8 --mode infer --bf16 --settings plain,xla,ynn
    python benchmarks/xla_dots.py --variant fmnist --mode train --settings plain,xla,ynn,onednn,xnn
    python benchmarks/xla_dots.py --variant 56/2,2/32/4/128/1 --settings xla,ynn,onednn   # a hybrid (hybrid_steps.py)
"""

import argparse
import json
import os
import resource
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from timing import take_turns  # noqa: E402
from workers import LineWorker  # noqa: E402

from keras_vit.xla_cpu import YNNPACK_DOTS  # noqa: E402

# Each setting: the XLA_FLAGS its worker runs with, or None for the plain graph (no XLA).
SETTINGS = {
    "plain": None,
    "xla": "",
    "ynn": YNNPACK_DOTS,  # what keras_vit's training commands use
    "ynn_conv": YNNPACK_DOTS + ",individual_convolution",
    "xnn": "--xla_cpu_use_xnnpack=true --xla_cpu_experimental_xnn_fusion_type=dot",
    "onednn": "--xla_cpu_use_onednn=true --xla_cpu_experimental_onednn_fusion_type=dot",
}
LABELS = {
    "plain": "plain graph (no XLA)",
    "xla": "XLA, its own products",
    "ynn": "XLA, products in YNNPACK",
    "ynn_conv": "XLA, products and convolutions in YNNPACK",
    "xnn": "XLA, products in XNNPACK",
    "onednn": "XLA, products in oneDNN",
}


def hybrid(variant):
    """Whether `variant` is a hybrid written as in benchmarks/hybrid_steps.py (`56/2,2/32/4/128/1`)."""
    return variant.count("/") == 5


def worker(config):
    """Build the model and its step, report the check value, then time `runs` calls per request."""
    import keras

    import hybrid_steps
    import keras_vit
    import peers
    from timing import median_seconds

    if config["bf16"]:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    size = config["size"]
    if hybrid(config["variant"]):
        model, _ = hybrid_steps.build(config["variant"])
    else:
        model = keras_vit.ViT(**peers.architecture(config["variant"]), input_shape=(size, size, 3),
                              classes=config["classes"])
    # The head starts at zero (as the paper's), which would make every output the same whatever ran
    # before it; random head weights, the same in every worker, make the check see the whole model.
    head = model.get_layer("head").kernel
    head.assign(np.random.default_rng(1).normal(0, 0.02, head.shape).astype(head.dtype))
    xla = config["xla"]
    if config["mode"] == "train":
        step = peers.keras_train_step(model, config["batch"], config["classes"], jit_compile=xla, ours=True)
        check = [float(step()) for _ in range(1 + config["warmup"])]  # the losses of the first steps
    else:
        step = peers.keras_forward(model, config["batch"], jit_compile=xla)
        check = np.asarray(step(), dtype="float32").ravel().tolist()
        for _ in range(config["warmup"]):
            step()
    print(json.dumps({"check": check}), flush=True)
    for _ in sys.stdin:
        seconds = median_seconds(step, config["runs"])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"seconds": seconds, "peak_mb": peak}), flush=True)


class KerasWorker(LineWorker):
    """A worker process running keras_vit under one `XLA_FLAGS` setting."""

    def __init__(self, flags, config):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
        env.pop("XLA_FLAGS", None)
        if flags:
            env["XLA_FLAGS"] = flags
        config = dict(config, xla=flags is not None)
        super().__init__([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(config)], env,
                         "A keras_vit worker stopped (exit status {status}); its error is above (an XLA_FLAGS "
                         "name or value this TensorFlow does not know?)")
        self.check = np.array(self.reply()["check"])

    def seconds(self):
        reply = self.ask("time")
        self.peak_mb = reply["peak_mb"]
        return reply["seconds"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="Ti/16",
                        help="a variant, fmnist for the demo's model, or a hybrid as in hybrid_steps.py")
    parser.add_argument("--size", type=int, default=None, help="default 224 (28 for fmnist)")
    parser.add_argument("--batch", type=int, default=None, help="default 32 (128 for fmnist)")
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--bf16", action="store_true", help="mixed bfloat16 (Keras policy, torch autocast)")
    parser.add_argument("--settings", default="plain,xla,ynn",
                        help=f"comma-separated, from {', '.join(SETTINGS)}; the first is the reference")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-timm", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    small = args.variant == "fmnist" or hybrid(args.variant)  # Fashion-MNIST models: 10 classes, batch 128
    size = args.size or (28 if small else 224)
    if hybrid(args.variant):
        import hybrid_steps

        args.no_timm = True  # timm has no such hybrid
        size = hybrid_steps.parse(args.variant)["image"]  # the hybrid's input size, whatever --size says
    batch = args.batch or (128 if small else 32)
    classes = 10 if small else 1000
    names = args.settings.split(",")
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; expected names from {list(SETTINGS)}")
    config = dict(variant=args.variant, size=size, batch=batch, classes=classes, mode=args.mode, bf16=args.bf16,
                  runs=args.runs, warmup=args.warmup)
    contenders = {}
    workers = []
    for name in names:  # one after another: no two compile at once
        workers.append(KerasWorker(SETTINGS[name], config))
        contenders[LABELS[name]] = workers[-1].seconds
    timm = None
    if not args.no_timm:
        import peers

        timm = peers.TimmWorker()
        contenders["timm (PyTorch)"] = lambda: timm.median_seconds(
            args.variant, size, batch, args.runs, args.warmup, classes=classes, bf16=args.bf16,
            train=args.mode == "train")
    rate = {name: batch / seconds for name, seconds in take_turns(contenders, args.rounds).items()}
    reference = rate[LABELS[names[0]]]
    what = "training step (AdamW)" if args.mode == "train" else "forward pass"
    print(f"{args.variant} at {size}, batch {batch}, {what}, {'mixed bfloat16' if args.bf16 else 'float32'}, "
          f"{args.rounds} rounds of {args.runs}\n")
    checked = "losses of the first steps" if args.mode == "train" else "probabilities"
    print(f"| implementation | XLA_FLAGS | img/s | / {LABELS[names[0]]} | / timm | largest difference from "
          f"{LABELS[names[0]]}'s {checked}, relative to its largest | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for name, w in zip(names, workers):
        label = LABELS[name]
        difference = float(np.max(np.abs(w.check - workers[0].check)) / np.max(np.abs(workers[0].check)))
        versus_timm = f"{rate[label] / rate['timm (PyTorch)']:.2f}x" if timm else ""
        print(f"| {label} | `{SETTINGS[name] or ''}` | {rate[label]:.2f} | {rate[label] / reference:.2f}x | "
              f"{versus_timm} | {difference:.2g} | {w.peak_mb:.0f} |")
    if timm is not None:
        print(f"| timm (PyTorch) | | {rate['timm (PyTorch)']:.2f} | {rate['timm (PyTorch)'] / reference:.2f}x | "
              f"1.00x | | {timm.peak_rss / 2**20:.0f} |")
        timm.close()
    for w in workers:
        w.close()


if __name__ == "__main__":
    main()
