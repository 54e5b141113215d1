"""How fast a ViT could run if only its matrix products took time: a bound per model, per library.

`ceiling.py` times one large square matmul; a ViT's own products are thinner (Ti/16's are 192 wide)
and reach less of that rate. This script lists the products of one forward pass, or of one training
step (each forward product and its two backward products, and the attention scores again where
keras_vit recomputes them), times every distinct shape on its own in TensorFlow (oneDNN, as the
models run) and in PyTorch (in a subprocess, as `peers.py` runs timm), and adds them up. Images per
second at that sum is what the library's matmuls allow with everything else free: no
implementation on that library can beat it, and the gap to a measured figure is the time spent
outside the matmuls. The classifier head (a few MFLOP) is left out.

    python benchmarks/matmul_bound.py --variant Ti/16 --size 224 --batch 32 --mode train --rounds 3
    python benchmarks/matmul_bound.py --variant B/16 --batch 8 --mode infer --bf16 --rounds 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import median_seconds, milliseconds  # noqa: E402


def products(row, size, batch, mode):
    """The matrix products of a ViT pass: a list of `(name, count, batch_dims, m, k, n, transpose_a,
    transpose_b)`, each `count` times `batch_dims` products of an `(m, k)` by a `(k, n)` matrix, the
    operands stored transposed where the flags say (as the backward pass reads them).
    """
    d, mlp, p, heads = row["hidden_size"], row["mlp_dim"], row["patch_size"], row["num_heads"]
    layers, patches = row["num_layers"], (size // p) ** 2
    tokens, head_dim = patches + 1, d // heads
    flat = batch * tokens  # token rows of the whole batch

    dense = [("q/k/v projection", layers, flat, d, 3 * d), ("attention output", layers, flat, d, d),
             ("MLP in", layers, flat, d, mlp), ("MLP out", layers, flat, mlp, d),
             ("patch embedding", 1, batch * patches, 3 * p * p, d)]
    # Per (image, head): scores S = Q K^T, then context C = P V; backward dQ = dS K, dK = dS^T Q,
    # dP = dC V^T, dV = P^T dC. Each `(name, m, k, n, transpose_a, transpose_b)`.
    attention = [("attention scores", tokens, head_dim, tokens, False, True),
                 ("attention context", tokens, tokens, head_dim, False, False)]
    if mode == "train":
        attention += [("attention scores: query gradient", tokens, tokens, head_dim, False, False),
                      ("attention scores: key gradient", tokens, tokens, head_dim, True, False),
                      ("attention context: probabilities gradient", tokens, head_dim, tokens, False, True),
                      ("attention context: value gradient", tokens, tokens, head_dim, True, False)]
    listed = []
    for name, count, m, k, n in dense:
        listed.append((name, count, 1, m, k, n, False, False))
        if mode == "train":
            if name != "patch embedding":  # the image needs no gradient
                listed.append((name + ": input gradient", count, 1, m, n, k, False, True))
            listed.append((name + ": weight gradient", count, 1, k, m, n, True, False))
    listed += [(name, layers, batch * heads, m, k, n, ta, tb) for name, m, k, n, ta, tb in attention]
    if mode == "train":
        # keras_vit recomputes the attention probabilities in the backward pass (RESULTS.md, fourth round).
        listed.append(("attention scores, recomputed (keras_vit)", layers, batch * heads, tokens, head_dim, tokens,
                       False, True))
    return listed


def gflop(product):
    _, count, batch_dims, m, k, n, _, _ = product
    return 2 * count * batch_dims * m * k * n / 1e9


def time_tensorflow(shapes, bf16, runs, warmup):
    """Median seconds of each `(batch_dims, m, k, n, transpose_a, transpose_b)` product in TensorFlow."""
    import tensorflow as tf

    dtype = tf.bfloat16 if bf16 else tf.float32
    result = []
    for batch_dims, m, k, n, ta, tb in shapes:
        a = tf.cast(tf.random.uniform(((batch_dims,) if batch_dims > 1 else ()) + ((k, m) if ta else (m, k))), dtype)
        b = tf.cast(tf.random.uniform(((batch_dims,) if batch_dims > 1 else ()) + ((n, k) if tb else (k, n))), dtype)
        step = tf.function(lambda x, y, ta=ta, tb=tb: tf.reduce_sum(
            tf.cast(tf.reshape(tf.linalg.matmul(x, y, transpose_a=ta, transpose_b=tb), (-1,))[:1], tf.float32)))
        result.append(median_seconds(lambda: step(a, b).numpy(), runs, warmup))
    return result


def time_torch(shapes, bf16, runs, warmup):
    """The same in PyTorch, run in a subprocess of this script (TensorFlow and PyTorch stay apart)."""
    command = [sys.executable, os.path.abspath(__file__), "--torch_worker", json.dumps(
        {"shapes": shapes, "bf16": bf16, "runs": runs, "warmup": warmup})]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the PyTorch timing worker failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _torch_worker(task):
    import torch

    dtype = torch.bfloat16 if task["bf16"] else torch.float32
    result = []
    with torch.inference_mode():
        for batch_dims, m, k, n, ta, tb in task["shapes"]:
            lead = (batch_dims,) if batch_dims > 1 else ()
            a = torch.rand(lead + ((k, m) if ta else (m, k)), dtype=dtype)
            b = torch.rand(lead + ((n, k) if tb else (k, n)), dtype=dtype)
            a, b = (a.transpose(-1, -2) if ta else a), (b.transpose(-1, -2) if tb else b)
            result.append(median_seconds(lambda: float(torch.matmul(a, b).reshape(-1)[0]), task["runs"], task["warmup"]))
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="Ti/16", help="a table variant, or fmnist for the demo model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--mode", choices=["train", "infer"], default="train")
    parser.add_argument("--bf16", action="store_true", help="operands in bfloat16, as under mixed precision")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch_worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        return _torch_worker(json.loads(args.torch_worker))

    import peers

    listed = products(peers.architecture(args.variant), args.size, args.batch, args.mode)
    shapes = sorted({product[2:] for product in listed})
    rounds = {"TensorFlow": [], "PyTorch": []} if not args.no_torch else {"TensorFlow": []}
    for _ in range(args.rounds):  # the libraries take turns, so a slow spell of the machine hits both
        rounds["TensorFlow"].append(time_tensorflow(shapes, args.bf16, args.runs, args.warmup))
        if not args.no_torch:
            rounds["PyTorch"].append(time_torch(shapes, args.bf16, args.runs, args.warmup))
    libraries = list(rounds)
    seconds = {name: {shape: statistics.median(times[i] for times in rounds[name]) for i, shape in enumerate(shapes)}
               for name in libraries}

    dtype = "bfloat16" if args.bf16 else "float32"
    print(f"{args.variant} at {args.size}, batch {args.batch}, {args.mode}, {dtype}: each product timed alone, "
          f"median over {args.rounds} rounds of the median of {args.runs} after {args.warmup}\n")
    print("| product | count | shape (batch x m x k x n) | GFLOP | " +
          " | ".join(f"{name} ms | {name} GFLOP/s" for name in libraries) + " |")
    print("|---|---|---|---|" + "---|---|" * len(libraries))
    totals = {name: {"all": 0.0, "no_recompute": 0.0} for name in libraries}
    for product in listed:
        name, count, batch_dims, m, k, n = product[:6]
        cells = []
        for library in libraries:
            took = count * seconds[library][product[2:]]
            totals[library]["all"] += took
            if "recomputed" not in name:
                totals[library]["no_recompute"] += took
            cells += [milliseconds(took), f"{gflop(product) / took:.0f}"]
        print(f"| {name} | {count} | {batch_dims} x {m} x {k} x {n} | {gflop(product):.2f} | " +
              " | ".join(cells) + " |")
    print()
    for library, total in totals.items():
        print(f"{library}: matmuls alone {1000 * total['all']:.0f} ms per pass -> at most "
              f"{args.batch / total['all']:.2f} img/s" +
              (f" ({args.batch / total['no_recompute']:.2f} img/s without keras_vit's recomputed scores)"
               if args.mode == "train" else ""))


if __name__ == "__main__":
    main()
