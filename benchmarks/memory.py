"""Where a training process's memory goes: keras_vit next to timm, batch by batch.

Each measurement is a fresh process (peak RSS only grows) that imports its framework, builds the
model and its AdamW optimizer (clipping at global norm 1), and takes `--steps` training steps on a
random batch. It reports the resident memory after the import, after the build, and the process's
peak; for keras_vit also the peak of tensor memory, from TensorFlow's own allocator
(`TF_CPU_ALLOCATOR_USE_BFC=true`, which reports CPU tensors). Peak minus build, as a line over
the batch size, splits into a fixed part (graphs, kernels, optimizer state) and a part per image
(activations kept for the backward pass).

    python benchmarks/memory.py --variant Ti/16 --batches 1 8 32
"""

import argparse
import json
import os
import subprocess
import sys
import textwrap

COMMON = textwrap.dedent(
    """
    import json, resource, sys
    def rss():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    variant, size, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    """
)

KERAS = COMMON + textwrap.dedent(
    """
    import numpy as np, keras, tensorflow as tf
    import keras_vit
    from keras_vit import optimizers
    from keras_vit.variants import VARIANTS, canonical_name
    imported = rss()
    model = keras_vit.ViT(**VARIANTS[canonical_name(variant)], input_shape=(size, size, 3), classes=1000)
    optimizer = optimizers.AdamW(1e-4, weight_decay=0.05, global_clipnorm=1.0)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", jit_compile=False)
    optimizer.build(model.trainable_variables)  # as keras_vit.training.compile_model does
    built = rss()
    x = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    for _ in range(steps):
        model.train_on_batch(x, np.arange(batch) % 1000)
    tensors = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
    print(json.dumps(dict(imported=imported, built=built, peak=peak(), tensors=tensors)))
    """
)

TIMM = COMMON + textwrap.dedent(
    """
    import torch, timm
    from torch.nn.functional import cross_entropy
    imported = rss()
    names = {"Ti/16": "vit_tiny_patch16_224", "S/16": "vit_small_patch16_224", "B/16": "vit_base_patch16_224"}
    model = timm.create_model(names[variant], img_size=size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    built = rss()
    x, y = torch.rand(batch, 3, size, size), torch.arange(batch) % 1000
    for _ in range(steps):
        optimizer.zero_grad()
        cross_entropy(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    print(json.dumps(dict(imported=imported, built=built, peak=peak(), tensors=None)))
    """
)


def measure(script, args, batch):
    env = dict(os.environ, TF_CPU_ALLOCATOR_USE_BFC="true", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    command = [sys.executable, "-c", script, args.variant, str(args.size), str(batch), str(args.steps)]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:2]} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="Ti/16", choices=["Ti/16", "S/16", "B/16"])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", choices=["keras_vit", "timm"], default=None)
    args = parser.parse_args()
    scripts = {"keras_vit": KERAS, "timm (PyTorch)": TIMM}
    if args.only:
        scripts = {name: s for name, s in scripts.items() if name.startswith(args.only)}
    print(f"ViT-{args.variant} at {args.size}, AdamW, {args.steps} training steps, MB\n")
    print("| implementation | batch | after import | after build | peak RSS | peak - build | tensor peak |")
    print("|---|---|---|---|---|---|---|")
    for name, script in scripts.items():
        rows = []
        for batch in args.batches:
            m = measure(script, args, batch)
            rows.append((batch, m["peak"] - m["built"]))
            tensors = f"{m['tensors']:.0f}" if m["tensors"] is not None else ""
            print(f"| {name} | {batch} | {m['imported']:.0f} | {m['built']:.0f} | {m['peak']:.0f} | "
                  f"{m['peak'] - m['built']:.0f} | {tensors} |", flush=True)
        if len(rows) > 1:
            (b0, p0), (b1, p1) = rows[0], rows[-1]
            per_image = (p1 - p0) / (b1 - b0)
            print(f"| {name}: fixed part | | | | | {p0 - b0 * per_image:.0f} | |")
            print(f"| {name}: per image | | | | | {per_image:.1f} | |")


if __name__ == "__main__":
    main()
