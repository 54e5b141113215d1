"""The MLP of a Transformer block, `Dense -> GELU -> Dense`, with its backward pass written out.

Differentiated op by op, the MLP keeps two tensors of its hidden width (`mlp_dim`, four times the
model's width) per block for the backward pass: the GELU's input, for the GELU's derivative, and
its output, for the second kernel's gradient. `mlp` keeps only the first: the backward pass
recomputes the GELU from it together with the derivative, sharing one `erf` (or `tanh`), so the
second costs one multiplication instead of 4 bytes x tokens x `mlp_dim` of memory per block (a
sixth of ViT-Ti/16's training activations; `benchmarks/RESULTS.md`, "Training speed and memory").

The block's weights stay in its two `keras.layers.Dense` (checkpoint names and shapes unchanged);
the result equals `dense_1(gelu(dense_0(x)))` up to float rounding (`tests/test_mlp.py`). Under XLA,
which schedules its own recomputation, and where the layers are not plain `Dense`, the block calls
its layers instead (`can_fuse`).
"""

import functools

import keras
from keras import ops

from keras_vit.activations import VALUE_AND_DERIVATIVE, gelu_autodiff
from keras_vit.compiling import after, xla_compiling


def _plain_dense(layer):
    return (
        type(layer) is keras.layers.Dense
        and layer.built
        and layer.use_bias
        and layer.activation is keras.activations.linear
        and not getattr(layer, "lora_enabled", False)
        and getattr(layer, "quantization_mode", None) is None
    )


def can_fuse(dense_0, dense_1, dropout, training):
    """Whether `mlp` computes what the layers would: two plain biased `Dense`, no dropout between them
    at this call, and not traced for XLA."""
    dropping = bool(training) and dropout.rate > 0
    return _plain_dense(dense_0) and _plain_dense(dense_1) and not dropping and not xla_compiling()


def _matmul(a, b, transpose_a=False, transpose_b=False):
    """`a @ b` of 2-D tensors, either transposed; on TensorFlow without materialising the transpose."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    return ops.matmul(ops.transpose(a) if transpose_a else a, ops.transpose(b) if transpose_b else b)


def _float32(function, x):
    return function(ops.cast(x, "float32"))


@functools.lru_cache(maxsize=None)
def _fused(approximate):
    value_and_derivative = VALUE_AND_DERIVATIVE[approximate]

    @ops.custom_gradient
    def mlp(x, kernel_0, bias_0, kernel_1, bias_1):
        dtype = keras.backend.standardize_dtype(x.dtype)
        width, hidden = kernel_0.shape
        rows = ops.reshape(x, (-1, width))
        pre = ops.matmul(rows, kernel_0) + bias_0
        activated = gelu_autodiff(pre, approximate)  # float32 GELU; its gradient is `grad` below
        out = ops.matmul(activated, kernel_1) + bias_1
        out = ops.reshape(out, ops.shape(x))

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            d_out = ops.reshape(upstream, (-1, width))
            d_hidden = _matmul(d_out, kernel_1, transpose_b=True)
            # Only `x` (as `rows`) and `pre` are kept from the forward pass.
            (kept,) = after(d_hidden, pre)
            value, slope = _float32(value_and_derivative, kept)
            d_kernel_1 = _matmul(ops.cast(value, dtype), d_out, transpose_a=True)
            d_pre = ops.cast(ops.cast(d_hidden, "float32") * slope, dtype)
            d_kernel_0 = _matmul(rows, d_pre, transpose_a=True)
            d_x = ops.reshape(_matmul(d_pre, kernel_0, transpose_b=True), ops.shape(x))
            return d_x, d_kernel_0, ops.sum(d_pre, axis=0), d_kernel_1, ops.sum(d_out, axis=0)

        return out, grad

    return mlp


def mlp(dense_0, dense_1, inputs, approximate=False):
    """`dense_1(gelu(dense_0(inputs)))` for two plain `Dense` (see `can_fuse`), in their compute dtype."""
    dtype = dense_0.compute_dtype
    # Read outside the custom gradient, which takes tensors (the casts carry gradients to the variables).
    weights = [ops.cast(ops.copy(w), dtype) for w in (dense_0.kernel, dense_0.bias, dense_1.kernel, dense_1.bias)]
    return _fused(bool(approximate))(ops.cast(inputs, dtype), *weights)
