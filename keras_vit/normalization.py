"""LayerNorm computed on the weights of a `keras.layers.LayerNormalization`, with its gradient written out.

`keras.ops.layer_normalization` on TensorFlow computes `x * (rsqrt(var + eps) * gamma) + (beta -
mean * rsqrt(var + eps) * gamma)`: two products of the full `(batch, tokens, D)` size in the
forward pass, and automatic differentiation then keeps those tensors and differentiates the
broadcasts op by op. `layer_norm` computes the same normalisation in float32 and gives its gradient
in closed form:

    x_hat = (x - mean) * rstd,    y = x_hat * gamma + beta
    dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),    g = dy * gamma

keeping only the input and the per-token `mean` and `rstd` for the backward pass.

In a pre-norm Transformer block each LayerNorm feeds a matrix product (q/k/v, the MLP's first
kernel), whose gradient needs its input: the normalised tensor. `normalized_product` is the two as
one operation: its backward pass recomputes `y` from the kept input and statistics (a few
elementwise operations) instead of keeping it, one `(batch, tokens, D)` tensor per LayerNorm
(`keras_vit.mlp` does the same before the MLP). Results equal the layers' own calls up to float
rounding (`tests/test_normalization.py`).
"""

import functools

import keras
from keras import ops

from keras_vit.compiling import after, xla_compiling


def can_fuse(layer):
    """Whether `layer_norm(layer, x)` computes what `layer(x)` would: a built LayerNormalization over the
    last axis only, with `gamma` and `beta` and no RMS scaling."""
    return (
        type(layer) is keras.layers.LayerNormalization
        and layer.built
        and list(layer.axis) == [-1]
        and layer.center
        and layer.scale
        and not layer.rms_scaling
    )


def forward(x, gamma, beta, epsilon, dtype):
    """`(y, mean, rstd)`: the LayerNorm of `x` over its last axis, computed in float32 and cast to
    `dtype`, and the per-row float32 statistics (keepdims) that its backward pass keeps."""
    x32 = ops.cast(x, "float32")
    mean = ops.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    rstd = ops.rsqrt(ops.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
    return ops.cast(centred * rstd * gamma + beta, dtype), mean, rstd


def _x_hat(x, mean, rstd):
    return (ops.cast(x, "float32") - mean) * rstd


def _gradient(dy, x_hat, rstd, gamma):
    """`(dx, dgamma, dbeta)` in float32 for the incoming gradient `dy` of the LayerNorm output."""
    dy = ops.cast(dy, "float32")
    g = dy * gamma
    dx = rstd * (g - ops.mean(g, axis=-1, keepdims=True) - x_hat * ops.mean(g * x_hat, axis=-1, keepdims=True))
    return dx, column_sum(dy * x_hat), column_sum(dy)


def backward(x, mean, rstd, gamma, beta, dy, dtype):
    """`(y, dx, dgamma, dbeta)` from the kept `(x, mean, rstd)`, `gamma`, `beta` and the incoming gradient
    `dy`: the LayerNorm's output `y` recomputed (in `dtype`, for the next product's kernel gradient)
    and its backward pass; `dx` in `x`'s dtype."""
    x_hat = _x_hat(x, mean, rstd)
    y = ops.cast(x_hat * gamma + beta, dtype)  # as `forward` computed it
    dx, dgamma, dbeta = _gradient(dy, x_hat, rstd, gamma)
    return y, ops.cast(dx, x.dtype), dgamma, dbeta


@functools.lru_cache(maxsize=None)
def _normalizer(epsilon):
    @ops.custom_gradient
    def normalize(x, gamma, beta):
        dtype = keras.backend.standardize_dtype(x.dtype)
        outputs, mean, rstd = forward(x, gamma, beta, epsilon, dtype)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            kept_x, kept_mean, kept_rstd = after(upstream, x, mean, rstd)  # only these are kept
            dx, dgamma, dbeta = _gradient(upstream, _x_hat(kept_x, kept_mean, kept_rstd), kept_rstd, gamma)
            return ops.cast(dx, dtype), dgamma, dbeta

        return outputs, grad

    return normalize


def layer_norm(layer, inputs):
    """`layer(inputs)` of a LayerNormalization for which `can_fuse` is true, in the layer's compute dtype.

    Statistics and arithmetic are float32 whatever the input dtype (as Keras does); `gamma` and
    `beta` stay float32. Under XLA this is the layer's own call (`keras_vit.compiling`).
    """
    if xla_compiling():  # XLA fuses Keras' own LayerNorm and its automatic gradient better
        return layer(inputs)
    normalize = _normalizer(float(layer.epsilon))
    # Read outside `normalize`: a custom gradient takes tensors, not variables.
    outputs = normalize(inputs, ops.copy(layer.gamma), ops.copy(layer.beta))
    return ops.cast(outputs, layer.compute_dtype)


def normalize(layer, inputs):
    """`layer(inputs)` of any normalization layer, through `layer_norm` where `can_fuse(layer)`."""
    return layer_norm(layer, inputs) if can_fuse(layer) else layer(inputs)


def matmul(a, b, transpose_a=False, transpose_b=False):
    """`a @ b` of 2-D tensors, either transposed; on TensorFlow without materialising the transpose."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.linalg.matmul(a, b, transpose_a=transpose_a, transpose_b=transpose_b)
    return ops.matmul(ops.transpose(a) if transpose_a else a, ops.transpose(b) if transpose_b else b)


def column_sum(x):
    """The sum of `x` over all axes but the last: a bias's or a LayerNorm weight's gradient, shape `(N,)`.

    On TensorFlow outside XLA this is the product of a row of ones with `x` as rows: TensorFlow's `Sum`
    over the first axis of a `(6304, 768)` tensor takes 2-5x as long as that product
    (benchmarks/RESULTS.md, "Fifth round"). Elsewhere, `ops.sum`.
    """
    rows = ops.reshape(x, (-1, x.shape[-1]))
    if keras.backend.backend() == "tensorflow" and not xla_compiling():
        import tensorflow as tf

        return ops.reshape(tf.linalg.matmul(tf.ones((1, tf.shape(rows)[0]), rows.dtype), rows), (-1,))
    return ops.sum(rows, axis=0)


@functools.lru_cache(maxsize=None)
def _normalized_product(epsilon):
    @ops.custom_gradient
    def product(x, gamma, beta, kernel, bias):
        dtype = keras.backend.standardize_dtype(kernel.dtype)
        width = kernel.shape[0]
        rows = ops.reshape(x, (-1, width))
        y, mean, rstd = forward(rows, gamma, beta, epsilon, dtype)
        outputs = ops.matmul(y, kernel) + bias

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            d_out = ops.reshape(upstream, (-1, kernel.shape[1]))
            d_y = matmul(d_out, kernel, transpose_b=True)
            kept = after(d_out, rows, mean, rstd)  # y is recomputed, not kept
            y, dx, dgamma, dbeta = backward(*kept, gamma, beta, d_y, dtype)
            d_kernel = matmul(y, d_out, transpose_a=True)
            return ops.reshape(ops.cast(dx, x.dtype), ops.shape(x)), dgamma, dbeta, d_kernel, column_sum(d_out)

        return outputs, grad

    return product


def normalized_product(layer, inputs, kernel, bias):
    """`layer(inputs) @ kernel + bias` as rows: shape `(prod(inputs.shape[:-1]), kernel.shape[1])`.

    `layer` is a LayerNormalization for which `can_fuse` is true; `kernel` `(D, N)` and `bias` `(N,)`
    are tensors in the compute dtype the product runs in. The normalised input is not kept for the
    backward pass. Not for XLA, which schedules its own recomputation (callers check
    `keras_vit.compiling.xla_compiling`).
    """
    product = _normalized_product(float(layer.epsilon))
    return product(inputs, ops.copy(layer.gamma), ops.copy(layer.beta), kernel, bias)
