"""LayerNorm computed on the weights of a `keras.layers.LayerNormalization`, with its gradient written out.

`keras.ops.layer_normalization` on TensorFlow computes `x * (rsqrt(var + eps) * gamma) + (beta -
mean * rsqrt(var + eps) * gamma)`: two products of the full `(batch, tokens, D)` size in the
forward pass, and automatic differentiation then keeps those tensors and differentiates the
broadcasts op by op. `layer_norm` computes the same normalisation in float32 and gives its gradient
in closed form:

    x_hat = (x - mean) * rstd,    y = x_hat * gamma + beta
    dx = rstd * (g - mean(g) - x_hat * mean(g * x_hat)),    g = dy * gamma

keeping only the input and the per-token `mean` and `rstd` for the backward pass. The result
equals the layer's own call up to float rounding (`tests/test_normalization.py`).
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


@functools.lru_cache(maxsize=None)
def _normalizer(epsilon):
    @ops.custom_gradient
    def normalize(x, gamma, beta):
        dtype = keras.backend.standardize_dtype(x.dtype)
        x32 = ops.cast(x, "float32")
        mean = ops.mean(x32, axis=-1, keepdims=True)
        centred = x32 - mean
        rstd = ops.rsqrt(ops.mean(centred * centred, axis=-1, keepdims=True) + epsilon)
        outputs = ops.cast(centred * rstd * gamma + beta, dtype)

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            dy = ops.cast(upstream, "float32")
            kept_x, kept_mean, kept_rstd = after(upstream, x, mean, rstd)  # only these are kept
            x_hat = (ops.cast(kept_x, "float32") - kept_mean) * kept_rstd
            batch_axes = tuple(range(len(dy.shape) - 1))
            g = dy * gamma
            dx = kept_rstd * (g - ops.mean(g, axis=-1, keepdims=True)
                         - x_hat * ops.mean(g * x_hat, axis=-1, keepdims=True))
            return ops.cast(dx, dtype), ops.sum(dy * x_hat, axis=batch_axes), ops.sum(dy, axis=batch_axes)

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
