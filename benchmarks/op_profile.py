"""Where the time of a keras_vit forward pass goes: the TensorFlow profiler, summed by op type.

Runs a few forward passes of a variant (random weights) under `tf.profiler`, converts the trace with
TensorFlow's own profiler plugin (the "framework_op_stats" tool that TensorBoard's profile tab shows)
and prints the op types by self time, as a share of the busy time (idle threads left out). The raw
trace stays in --logdir for TensorBoard.

    python benchmarks/op_profile.py --variant B/16 --batch 8 --bf16
    python benchmarks/op_profile.py --variant Ti/16 --batch 8 --xla
    python benchmarks/op_profile.py --variant Ti/16 --batch 8 --bf16 --keras-gelu   # before the GELU change
"""

import argparse
import collections
import glob
import json
import os
import shutil
import tempfile
import time


def op_type_times(logdir):
    """`{op type: self time in microseconds}` from the profiler trace in `logdir`."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    if not paths:
        raise RuntimeError(f"No profiler trace (*.xplane.pb) under {logdir!r}.")
    data, ok = plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    if not ok:
        raise RuntimeError(f"TensorFlow's profiler plugin could not read the trace under {logdir!r}.")
    table = json.loads(data)[0]
    columns = [column["id"] for column in table["cols"]]
    times = collections.Counter()
    for row in table["rows"]:
        cells = {name: (cell or {}).get("v") for name, cell in zip(columns, row["c"])}
        times[cells["type"]] += cells["total_self_time"]
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="B/16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bf16", action="store_true", help="mixed bfloat16 policy")
    parser.add_argument("--xla", action="store_true", help="jit_compile the forward pass")
    parser.add_argument("--keras-gelu", action="store_true",
                        help="trace the blocks with keras.activations.gelu instead of keras_vit's GELU")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--logdir", default=None, help="keep the trace here (default: a temporary folder)")
    args = parser.parse_args()

    import keras
    import numpy as np
    import tensorflow as tf

    import keras_vit
    from keras_vit import layers as vit_layers
    from keras_vit.variants import canonical_name

    if args.keras_gelu:
        vit_layers.gelu = keras.activations.gelu  # looked up when the blocks are traced

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.bf16 else "float32")
    model = keras_vit.CONSTRUCTORS[canonical_name(args.variant)](weights=None, input_shape=(args.size, args.size, 3))
    keras.mixed_precision.set_global_policy("float32")
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, (args.batch, args.size, args.size, 3)).astype("float32"))
    forward = tf.function(lambda images: model(images, training=False), jit_compile=args.xla)
    for _ in range(2):
        forward(x).numpy()
    logdir = args.logdir or tempfile.mkdtemp(prefix="keras_vit_profile_")
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(args.passes):
        forward(x).numpy()
    seconds = (time.perf_counter() - start) / args.passes
    tf.profiler.experimental.stop()
    times = op_type_times(logdir)
    times.pop("IDLE", None)
    busy = sum(times.values())
    mode = ("mixed bfloat16" if args.bf16 else "float32") + (", XLA" if args.xla else "")
    mode += ", keras.activations.gelu" if args.keras_gelu else ""
    print(f"ViT-{args.variant} at {args.size}, batch {args.batch}, {mode}: {seconds * 1e3:.0f} ms per forward pass "
          f"(under the profiler), {args.passes} passes profiled; trace in {logdir}\n")
    print("| op type | self time per pass (ms) | share of busy time |")
    print("|---|---|---|")
    for op_type, microseconds in times.most_common(args.top):
        print(f"| {op_type} | {microseconds / 1e3 / args.passes:.1f} | {100 * microseconds / busy:.1f}% |")


if __name__ == "__main__":
    main()
