"""Where the time of a keras_vit forward pass or training step goes: the TensorFlow profiler, by op type.

Runs a few forward passes (or, with --train, AdamW training steps) of a variant (random weights) under
`tf.profiler`, converts the trace with
TensorFlow's own profiler plugin (the "framework_op_stats" tool that TensorBoard's profile tab shows)
and prints the op types by self time, as a share of the busy time (idle threads left out). The raw
trace stays in --logdir for TensorBoard.

    python benchmarks/op_profile.py --variant B/16 --batch 8 --bf16
    python benchmarks/op_profile.py --variant Ti/16 --batch 8 --xla
    python benchmarks/op_profile.py --variant Ti/16 --batch 32 --train
    python benchmarks/op_profile.py --variant B/16 --batch 8 --bf16 --before gelu   # as before the GELU change
"""

import argparse
import collections
import contextlib
import glob
import json
import os
import shutil
import tempfile
import time

import ab


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
    ab.add_step_arguments(parser)
    parser.add_argument("--before", choices=ab.CHANGES, default=None,
                        help="trace the model as keras_vit computed before this change (see benchmarks/ab.py)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--logdir", default=None, help="keep the trace here (default: a temporary folder)")
    args = parser.parse_args()

    import tensorflow as tf

    model, images, labels = ab.build(args)
    with ab.undone(args.before) if args.before else contextlib.nullcontext():
        step, _ = ab.make_step(model, images, labels, args.train, args.xla)  # traced now
    step()
    logdir = args.logdir or tempfile.mkdtemp(prefix="keras_vit_profile_")
    shutil.rmtree(logdir, ignore_errors=True)
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    for _ in range(args.passes):
        step()
    seconds = (time.perf_counter() - start) / args.passes
    tf.profiler.experimental.stop()
    times = op_type_times(logdir)
    times.pop("IDLE", None)
    busy = sum(times.values())
    mode = ("mixed bfloat16" if args.bf16 else "float32") + (", XLA" if args.xla else "")
    mode += f", as before the {args.before} change" if args.before else ""
    what = "training step" if args.train else "forward pass"
    print(f"ViT-{args.variant} at {args.size}, batch {args.batch}, {mode}: {seconds * 1e3:.0f} ms per {what} "
          f"(under the profiler), {args.passes} passes profiled; trace in {logdir}\n")
    print(f"| op type | self time per {what} (ms) | share of busy time |")
    print("|---|---|---|")
    for op_type, microseconds in times.most_common(args.top):
        print(f"| {op_type} | {microseconds / 1e3 / args.passes:.1f} | {100 * microseconds / busy:.1f}% |")


if __name__ == "__main__":
    main()
