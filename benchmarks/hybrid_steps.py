"""Train-step time of candidate Fashion-MNIST hybrids (ResNet stem + small Transformer), one after another.

Used to choose the shipped checkpoint's architecture (weights/FASHION_MNIST.md): each candidate is a
`keras_vit.ViT` with a `resnet` stem, trained on a random batch as `keras_vit.training.compile_model`
trains it (keras_vit's AdamW, clipping at global norm 1, XLA), and timed after warm-up. A candidate is
written `input/stages/width/layers/hidden/patch`: `56/2,2/32/4/128/1` is a 56x56 input, a stem of two
stages of two units with root width 32, and 4 Transformer layers of width 128 (MLP 4x, 4 heads) on 1x1
patches of the stem's output. The default list is the table in weights/FASHION_MNIST.md.

`--group_norm` swaps the stem's GroupNorms: `keras` (what `keras_vit.resnet` uses, Keras'
`GroupNormalization`, differentiated by TensorFlow), `closed_form` (the same function with its
gradient written out, as `keras_vit.normalization` does for LayerNorm: a candidate that was measured
and not adopted, benchmarks/RESULTS.md) or `none` (no normalisation: what the GroupNorms cost).

    python benchmarks/hybrid_steps.py
    python benchmarks/hybrid_steps.py 28/2/64/4/128/1 56/2,2/32/4/128/1 --runs 40
    python benchmarks/hybrid_steps.py 56/2,2/32/4/128/1 --group_norm closed_form
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers  # noqa: E402

CANDIDATES = ["28/2/64/4/128/1", "56/2/64/4/128/2", "56/2/32/4/128/2", "56/1,1/32/4/128/1",
              "56/2,2/32/4/128/1", "56/1,2/32/4/128/1"]


def closed_form_group_norm(x, gamma, beta, groups, epsilon):
    """GroupNorm over channels-last `x` with its backward pass written out.

    With `xhat` the normalised input, `inv` the reciprocal standard deviation per (image, group) and
    `g = dy * gamma`: `dx = inv * (g - mean(g) - xhat * mean(g * xhat))`, means over each group.
    """
    from keras import ops

    channels = x.shape[-1]
    grouped = (-1, x.shape[1], x.shape[2], groups, channels // groups)

    @ops.custom_gradient
    def forward(x, gamma, beta):
        xg = ops.reshape(x, grouped)
        centred = xg - ops.mean(xg, axis=(1, 2, 4), keepdims=True)
        inv = ops.rsqrt(ops.mean(ops.square(centred), axis=(1, 2, 4), keepdims=True) + epsilon)
        xhat = centred * inv
        scale = ops.reshape(gamma, grouped[3:])

        def backward(*args, upstream=None):
            dy = ops.reshape(args[0] if upstream is None else upstream, ops.shape(xg))
            g = dy * scale
            dx = inv * (g - ops.mean(g, axis=(1, 2, 4), keepdims=True)
                        - xhat * ops.mean(g * xhat, axis=(1, 2, 4), keepdims=True))
            return (ops.reshape(dx, ops.shape(x)), ops.reshape(ops.sum(dy * xhat, axis=(0, 1, 2)), (channels,)),
                    ops.reshape(ops.sum(dy, axis=(0, 1, 2)), (channels,)))

        return ops.reshape(xhat * scale + ops.reshape(beta, grouped[3:]), ops.shape(x)), backward

    # `+ 0.0` hands the function tensors: TensorFlow's custom gradients refuse variables read inside.
    return forward(x, gamma + 0.0, beta + 0.0)


def group_norm_factory(kind):
    """A replacement for `keras_vit.resnet._group_norm`, or None to keep it."""
    import keras

    from keras_vit import resnet

    class ClosedFormGroupNorm(keras.layers.GroupNormalization):
        def call(self, inputs):
            return closed_form_group_norm(inputs, self.gamma, self.beta, self.groups, self.epsilon)

    return {
        "keras": None,
        "closed_form": lambda name, **kwargs: ClosedFormGroupNorm(
            groups=resnet.GROUPS, epsilon=resnet.GROUP_NORM_EPSILON, name=name, **kwargs),
        "none": lambda name, **kwargs: keras.layers.Identity(name=name),
    }[kind]


def parse(spec):
    """`"56/2,2/32/4/128/1"` -> the `keras_vit.ViT` arguments of that candidate."""
    try:
        image, stages, width, layers, hidden, patch = spec.split("/")
        return dict(image=int(image), stages=tuple(int(n) for n in stages.split(",")), width=int(width),
                    layers=int(layers), hidden=int(hidden), patch=int(patch))
    except ValueError:
        raise SystemExit(f"A candidate is input/stages/width/layers/hidden/patch, e.g. 56/2,2/32/4/128/1. "
                         f"Received: {spec!r}") from None


def build(spec):
    """The `keras_vit.ViT` of a candidate (10 classes), and its token grid's side."""
    import keras_vit
    from keras_vit.variants import resnet_config, resnet_stride

    c = parse(spec)
    stem = resnet_config(dict(num_layers=c["stages"], width=c["width"]))
    model = keras_vit.ViT(c["layers"], c["hidden"], 4 * c["hidden"], 4, c["patch"],
                          input_shape=(c["image"], c["image"], 3), classes=10, resnet=stem)
    return model, c["image"] // (resnet_stride(stem) * c["patch"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*", default=CANDIDATES)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--group_norm", choices=["keras", "closed_form", "none"], default="keras")
    args = parser.parse_args()

    from keras_vit import resnet

    factory = group_norm_factory(args.group_norm)
    if factory is not None:
        resnet._group_norm = factory

    print(f"train step, batch {args.batch}, AdamW, XLA, median of {args.runs} steps after {args.warmup}, "
          f"stem GroupNorm: {args.group_norm}\n")
    print("| input | stem: units per stage, width | patch | tokens | parameters | ms per step |")
    print("|---|---|---|---|---|---|")
    for spec in args.candidates:
        c = parse(spec)
        model, grid = build(spec)
        seconds = peers.keras_train_step_seconds(model, args.batch, runs=args.runs, warmup=args.warmup,
                                                 classes=10, jit_compile=True, ours=True)
        print(f"| {c['image']} | {'+'.join(map(str, c['stages']))}, {c['width']} | {c['patch']} | {grid * grid} | {model.count_params():,} "
              f"| {seconds * 1000:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
