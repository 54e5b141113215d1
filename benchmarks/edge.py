"""Single-image latency of every TFLite mode of a ViT next to its Keras model, in one run.

Builds the variant with random weights (latency does not depend on them; the agreement figures on a
trained model are in benchmarks/edge_fashion_mnist.py), writes one `.tflite` file per mode (int8 and
selective calibrated on `--calibration_samples` random images) to a temporary folder, or to `--dir`,
where files written by an earlier run are reused (so they can be written while the machine is busy,
with `--rounds 0`, and timed later), then times the Keras call (a `tf.function`) and each file's LiteRT interpreter in turn, round after
round: each round takes the median of `--runs` calls after 3 warm-up calls, and the figure is the
median over rounds. Prints a Markdown table with the ratio of each to the Keras call.

    python benchmarks/edge.py --variant B/16 --rounds 5 --runs 10
"""

import argparse
import functools
import os
import tempfile

import numpy as np

from keras_vit import cli_export, litert
from keras_vit.variants import canonical_name
from timing import take_turns


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="Ti/16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--modes", default=",".join(litert.QUANTIZE_MODES))
    parser.add_argument("--calibration_samples", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5, help="0: only write the files")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="LiteRT threads; 0: one per core")
    parser.add_argument("--dir", default=None, help="keep the files here and reuse them (default: a temporary folder)")
    args = parser.parse_args()
    modes = args.modes.split(",")
    bad = [m for m in modes if m not in litert.QUANTIZE_MODES]
    if bad:
        parser.error(f"--modes must be among {litert.QUANTIZE_MODES}. Received: {bad}")
    if args.dir:
        os.makedirs(args.dir, exist_ok=True)
        run(args, modes, args.dir)
    else:
        with tempfile.TemporaryDirectory() as folder:
            run(args, modes, folder)


def run(args, modes, folder):
    model = cli_export.random_model(args.variant, args.size)
    rng = np.random.default_rng(1)
    calibration = rng.uniform(-1, 1, (args.calibration_samples, args.size, args.size, 3)).astype("float32")
    files = {}
    stem = canonical_name(args.variant).replace("/", "")
    for mode in modes:
        path = os.path.join(folder, f"{stem}_{args.size}_{mode}.tflite")
        if not os.path.exists(path):
            litert.export_tflite(model, path, mode, calibration if mode in litert.CALIBRATED_MODES else None)
            print(f"wrote {path}", flush=True)
        files[mode] = path
    if args.rounds == 0:  # only write the files, e.g. while the machine is busy
        return

    image = calibration[:1]
    keras_call = litert.keras_callable(model)
    runners = {mode: litert.LiteRTModel(path, num_threads=args.threads or None) for mode, path in files.items()}
    calls = {"Keras": lambda x: keras_call(x).numpy(), **runners}
    medians = take_turns({name: functools.partial(litert.median_latency_ms, fn, image, args.runs)
                          for name, fn in calls.items()}, args.rounds)
    threads = args.threads or litert.default_threads()
    print(f"\n{canonical_name(args.variant)} at {args.size}, one image, {args.rounds} rounds x {args.runs} calls, "
          f"LiteRT threads {threads}")
    print("| model | size MB | median latency ms | / Keras |")
    print("|---|---|---|---|")
    keras_ms = medians["Keras"]
    for name, ms in medians.items():
        size = f"{os.path.getsize(files[name]) / 1e6:.2f}" if name in files else ""
        print(f"| {name} | {size} | {ms:.2f} | {ms / keras_ms:.2f}x |")


if __name__ == "__main__":
    main()
