"""The MLP of a Transformer block, `Dense -> GELU -> Dense`, with its backward pass written out.

Differentiated op by op, the MLP keeps two tensors of its hidden width (`mlp_dim`, four times the
model's width) per block for the backward pass: the GELU's input, for the GELU's derivative, and
its output, for the second kernel's gradient. `mlp` keeps only the first: the backward pass
recomputes the GELU from it together with the derivative, sharing one `erf` (or `tanh`), so the
second costs one multiplication instead of 4 bytes x tokens x `mlp_dim` of memory per block (a
sixth of ViT-Ti/16's training activations; `benchmarks/RESULTS.md`, "Training speed and memory").
Given the block's LayerNorm (`norm`), it also takes the normalisation in, and recomputes the
normalised input from the kept input and per-token statistics instead of keeping it
(`keras_vit.normalization.normalized_product` does the same for the attention's q/k/v).

The block's weights stay in its two `keras.layers.Dense` (checkpoint names and shapes unchanged);
the result equals `dense_1(gelu(dense_0(x)))` up to float rounding (`tests/test_mlp.py`). Under XLA,
which schedules its own recomputation, and where the layers are not plain `Dense`, the block calls
its layers instead (`can_fuse`).
"""

import functools

import keras
from keras import ops

from keras_vit import normalization
from keras_vit.activations import VALUE_AND_DERIVATIVE, gelu_autodiff
from keras_vit.compiling import after, xla_compiling
from keras_vit.normalization import matmul


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


def _static_shape(x):
    """`x`'s shape with -1 for the batch where the rest is known (a reshape that stays static in exports)."""
    if all(size is not None for size in x.shape[1:]):
        return (-1,) + tuple(x.shape[1:])
    return ops.shape(x)


def _gelu_backward(value_and_derivative, pre, d_hidden):
    """`(gelu(pre), d_hidden * gelu'(pre))` in `pre`'s dtype, computed in float32."""
    value, slope = value_and_derivative(ops.cast(pre, "float32"))
    return ops.cast(value, pre.dtype), ops.cast(ops.cast(d_hidden, "float32") * slope, pre.dtype)


@functools.lru_cache(maxsize=None)
def _fused(approximate, epsilon):
    """The MLP as one custom gradient; with `epsilon`, the block's LayerNorm before it too."""
    value_and_derivative = VALUE_AND_DERIVATIVE[approximate]

    @ops.custom_gradient
    def mlp(x, *weights):
        norm, (kernel_0, bias_0, kernel_1, bias_1) = weights[:-4], weights[-4:]
        dtype = keras.backend.standardize_dtype(kernel_0.dtype)
        width = kernel_0.shape[0]
        rows = ops.reshape(x, (-1, width))
        if norm:
            gamma, beta = norm
            inputs, mean, rstd = normalization.forward(rows, gamma, beta, epsilon, dtype)
        else:
            inputs = rows
        pre = ops.matmul(inputs, kernel_0) + bias_0
        activated = gelu_autodiff(pre, approximate)  # float32 GELU; its gradient is `grad` below
        out = ops.matmul(activated, kernel_1) + bias_1
        out = ops.reshape(out, _static_shape(x))

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            d_out = ops.reshape(upstream, (-1, width))
            d_hidden = matmul(d_out, kernel_1, transpose_b=True)
            # Only `x` (as `rows`), `pre` and the LayerNorm's statistics are kept from the forward pass.
            kept = after(d_hidden, pre, rows, *((mean, rstd) if norm else ()))
            value, d_pre = _gelu_backward(value_and_derivative, kept[0], d_hidden)
            d_kernel_1 = matmul(value, d_out, transpose_a=True)
            d_inputs = matmul(d_pre, kernel_0, transpose_b=True)
            weight_grads = [normalization.column_sum(d_pre), d_kernel_1, normalization.column_sum(d_out)]
            if norm:
                y, d_inputs, dgamma, dbeta = normalization.backward(*kept[1:], gamma, beta, d_inputs, dtype)
                weight_grads = [dgamma, dbeta, matmul(y, d_pre, transpose_a=True)] + weight_grads
            else:
                weight_grads = [matmul(kept[1], d_pre, transpose_a=True)] + weight_grads
            return (ops.reshape(ops.cast(d_inputs, x.dtype), ops.shape(x)), *weight_grads)

        return out, grad

    return mlp


def mlp(dense_0, dense_1, inputs, approximate=False, norm=None):
    """`dense_1(gelu(dense_0(inputs)))` for two plain `Dense` (see `can_fuse`), in their compute dtype.

    With `norm` (a normalization layer), the MLP of `norm(inputs)`; where
    `keras_vit.normalization.can_fuse(norm)`, its output is recomputed in the backward pass instead of kept.
    """
    dtype = dense_0.compute_dtype
    # Read outside the custom gradient, which takes tensors (the casts carry gradients to the variables).
    weights = [ops.cast(ops.copy(w), dtype) for w in (dense_0.kernel, dense_0.bias, dense_1.kernel, dense_1.bias)]
    if norm is not None and not normalization.can_fuse(norm):
        inputs, norm = normalization.normalize(norm, inputs), None
    if norm is None:
        return _fused(bool(approximate), None)(ops.cast(inputs, dtype), *weights)
    fused = _fused(bool(approximate), float(norm.epsilon))
    return fused(ops.cast(inputs, dtype), ops.copy(norm.gamma), ops.copy(norm.beta), *weights)
