"""Times keras_vit with and without one of its speed changes, in one run, alternating.

Each change can be undone while a model's functions are traced, because the blocks look it up
then:

- `gelu`: `keras_vit.layers.gelu` (the exact GELU as `0.5 x (1 + erf(x / sqrt 2))` in float32)
  against `keras.activations.gelu`, whose TensorFlow `erfc` has no vectorised bfloat16 kernel;
- `gelu_gradient`: the same float32 GELU with its derivative written out (`keras_vit.activations`:
  only the input is kept for the backward pass) against TensorFlow's automatic differentiation of
  it (which keeps three hidden-size tensors per block); matters for training only;
- `attention`: `keras_vit.attention.self_attention` (q/k/v in one fused product, heads laid out
  once) against `keras.layers.MultiHeadAttention`'s own call (three `EinsumDense` projections and
  two transposing einsums), on the same weights;
- `layer_norm`: `keras_vit.normalization.layer_norm` (float32, gradient in closed form, keeping the
  input and per-token statistics only) against `keras.layers.LayerNormalization`'s own call;
- `mlp`: `keras_vit.mlp.mlp` (the backward pass recomputes the GELU's output instead of keeping it)
  against the two `Dense` layers and the GELU called one after the other; training only;
- `optimizer`: `keras_vit.optimizers.AdamW` (one fused kernel per variable update) against
  `keras.optimizers.AdamW`; training only;
- `deferred_backward`: the backward passes of GELU, LayerNorm and the MLP made to wait for their
  incoming gradient (`keras_vit.compiling.after`) against letting TensorFlow run their
  recomputations during the forward pass; training only;
- `attention_probabilities`: the attention's backward pass recomputing the softmax probabilities
  from the kept query and key (`keras_vit.attention`) against keeping them; training only;
- `normalized_products`: each LayerNorm taken into the product after it (q/k/v, the MLP), whose
  backward pass recomputes the normalised tensor (`keras_vit.normalization.normalized_product`),
  against the LayerNorm on its own, whose output the product keeps; training only;
- `column_sums`: the bias and LayerNorm-weight gradients as a product with a row of ones
  (`keras_vit.normalization.column_sum`) against TensorFlow's `Sum` over the rows; training only.

The same model (same weights) is traced twice, once each way, and the two are timed in turn: forward
passes by default, or training steps (AdamW, sparse cross-entropy) with `--train`.

    python benchmarks/ab.py --change attention --variant B/16 --batch 8 --bf16
    python benchmarks/ab.py --change attention --variant Ti/16 --batch 32 --train --xla
    python benchmarks/ab.py --change gelu --variant B/16 --batch 8 --bf16
    python benchmarks/ab.py --change gelu_gradient --variant Ti/16 --batch 32 --train
"""

import argparse
import contextlib
import functools

from timing import median_seconds, take_turns


@contextlib.contextmanager
def undone(change):
    """Within the block, keras_vit computes as it did before `change`."""
    import keras
    from keras import ops

    from keras_vit import activations, attention, mlp, normalization, optimizers
    from keras_vit import layers as vit_layers

    if change not in CHANGES:
        raise ValueError(f"`change` must be one of {CHANGES}. Received: {change!r}")

    def never(*layers):
        return False

    def at_once(upstream, *tensors):
        return list(tensors)

    def keep_probabilities(query, key, value):
        return ops.einsum("bhts,bhsd->bhtd", ops.cast(attention._probabilities(query, key), query.dtype), value)

    def normalizing_first(function, layers):  # `function(*layers, inputs, ..., norm=None)`
        def call(*args, norm=None, **kwargs):
            args = list(args)
            if norm is not None:
                args[layers] = normalization.normalize(norm, args[layers])
            return function(*args, **kwargs)

        return call

    patches = {
        "gelu": [(vit_layers, "gelu", keras.activations.gelu)],
        "gelu_gradient": [(vit_layers, "gelu", activations.gelu_autodiff)],
        "attention": [(attention, "can_fuse", never)],
        "layer_norm": [(normalization, "can_fuse", never)],
        "mlp": [(mlp, "can_fuse", never)],
        "optimizer": [(optimizers, "AdamW", keras.optimizers.AdamW)],
        "deferred_backward": [(module, "after", at_once) for module in (activations, normalization, mlp, attention)],
        "attention_probabilities": [(attention, "_attend", keep_probabilities)],
        "normalized_products": [(attention, "self_attention", normalizing_first(attention.self_attention, 1)),
                                (mlp, "mlp", normalizing_first(mlp.mlp, 2))],
        "column_sums": [(normalization, "column_sum", lambda x: ops.sum(ops.reshape(x, (-1, x.shape[-1])), axis=0))],
    }[change]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    for module, name, before in patches:
        setattr(module, name, before)
    try:
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


DESCRIPTIONS = {
    "gelu": ("keras.activations.gelu (TF erfc)", "keras_vit gelu (float32 erf)"),
    "gelu_gradient": ("float32 erf GELU, autodiff", "float32 erf GELU, written-out derivative"),
    "attention": ("keras.layers.MultiHeadAttention call", "keras_vit fused self_attention"),
    "layer_norm": ("keras.layers.LayerNormalization call", "keras_vit layer_norm (written-out gradient)"),
    "mlp": ("Dense, GELU, Dense called in turn", "keras_vit mlp (GELU output recomputed)"),
    "optimizer": ("keras.optimizers.AdamW", "keras_vit.optimizers.AdamW (fused updates)"),
    "deferred_backward": ("recomputations run as soon as their inputs exist",
                          "recomputations wait for the incoming gradient (keras_vit.compiling.after)"),
    "attention_probabilities": ("attention probabilities kept for the backward pass",
                                "attention probabilities recomputed in the backward pass"),
    "normalized_products": ("LayerNorm output kept for q/k/v and the MLP",
                            "LayerNorm output recomputed (normalized_product, mlp with norm)"),
    "column_sums": ("bias and LayerNorm gradients by TensorFlow's Sum over rows",
                    "bias and LayerNorm gradients as a product with ones (column_sum)"),
}
CHANGES = tuple(DESCRIPTIONS)


def add_step_arguments(parser):
    """The flags that say which model to build and which step to run (`build`, `make_step`)."""
    parser.add_argument("--variant", default="B/16")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bf16", action="store_true", help="mixed bfloat16 policy")
    parser.add_argument("--xla", action="store_true", help="jit_compile the forward pass or training step")
    parser.add_argument("--train", action="store_true", help="training steps (AdamW) instead of forward passes")


def build(args):
    """The variant under the chosen policy, with a random head, and a batch of random images."""
    import keras
    import numpy as np

    import keras_vit
    from keras_vit.variants import canonical_name

    keras.mixed_precision.set_global_policy("mixed_bfloat16" if args.bf16 else "float32")
    keras.utils.set_random_seed(0)
    shape = (args.size, args.size, 3)
    model = keras_vit.CONSTRUCTORS[canonical_name(args.variant)](weights=None, input_shape=shape)
    keras.mixed_precision.set_global_policy("float32")
    head = model.get_layer("head").kernel  # zero from scratch: give the outputs something to differ by
    head.assign(np.random.default_rng(1).normal(0, 0.02, head.shape).astype("float32"))
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (args.batch,) + shape).astype("float32")
    labels = rng.integers(0, model.output_shape[-1], args.batch)
    return model, images, labels


def make_step(model, images, labels, train=False, xla=False):
    """`(step, outputs)`: a function that runs one forward pass (or training step), traced now, and the
    model's outputs on `images` before any training."""
    import tensorflow as tf

    from keras_vit import optimizers

    if train:
        model.compile(optimizer=optimizers.AdamW(1e-4), loss="sparse_categorical_crossentropy", jit_compile=xla)
        outputs = model.predict_on_batch(images)
        model.train_on_batch(images, labels)
        return (lambda: model.train_on_batch(images, labels)), outputs
    x = tf.constant(images)
    forward = tf.function(lambda batch: model(batch, training=False), jit_compile=xla)
    outputs = forward(x).numpy()
    return (lambda: forward(x).numpy()), outputs


def step_functions(args):
    """`{description: step}` for the same model before and after the change, each traced once, and the
    largest difference of their first outputs."""
    import keras

    model, images, labels = build(args)
    steps, outputs = {}, {}
    for side, description in zip(("before", "after"), DESCRIPTIONS[args.change]):
        twin = model
        if args.train:  # each side trains its own copy
            twin = keras.models.clone_model(model)
            twin.set_weights(model.get_weights())
        with undone(args.change) if side == "before" else contextlib.nullcontext():
            steps[description], outputs[side] = make_step(twin, images, labels, args.train, args.xla)
    return steps, abs(outputs["after"] - outputs["before"]).max()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--change", choices=CHANGES, required=True)
    add_step_arguments(parser)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    steps, difference = step_functions(args)
    for step in steps.values():
        step()  # warm-up
    seconds = take_turns({name: functools.partial(median_seconds, step, args.runs) for name, step in steps.items()},
                         args.rounds)
    mode = ("mixed bfloat16" if args.bf16 else "float32") + (", XLA" if args.xla else "")
    what = "training steps" if args.train else "forward passes"
    print(f"ViT-{args.variant} at {args.size}, batch {args.batch}, {mode}, {what}; "
          f"max abs difference of the first outputs: {difference:.2e}\n")
    print(f"| {args.change} | img/s | speed-up |")
    print("|---|---|---|")
    base = None
    for name, step_seconds in seconds.items():
        rate = args.batch / step_seconds
        base = base or rate
        print(f"| {name} | {rate:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
