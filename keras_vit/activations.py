"""GELU, the activation of ViT's MLP blocks, computed in float32 with its derivative written out.

Mathematically the same as `keras.activations.gelu`, but faster and lighter:

- Forward: TensorFlow's exact GELU goes through `erfc`, which has no vectorised bfloat16 kernel and
  took a fifth of a mixed-bfloat16 ViT forward pass (`benchmarks/RESULTS.md`, "Where the time
  goes"); float32 `erf` is vectorised, and float32 is also the more accurate place to compute it.
- Backward: automatic differentiation of `0.5 x (1 + erf(x / sqrt 2))` keeps three tensors of the
  MLP's hidden size per block for the backward pass (`0.5 x`, `1 + erf(.)` and `x / sqrt 2`) and
  differentiates them op by op. Here the backward pass keeps only the input and computes the
  closed-form derivative `Phi(x) + x phi(x)` (exact) or its tanh counterpart in one expression.
"""

import math

import keras
from keras import ops

from keras_vit.compiling import xla_compiling

_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_CUBIC = 0.044715


# The forward expressions are written as TensorFlow's converters expect them: the LiteRT converter
# turns exactly these patterns into its GELU builtin (another arrangement leaves an unsupported Erf).
def _exact(x32):
    def derivative():
        return 0.5 * (1.0 + ops.erf(x32 * _SQRT_HALF)) + x32 * ops.exp(-0.5 * x32 * x32) * _INV_SQRT_2PI

    return 0.5 * x32 * (1.0 + ops.erf(x32 * _SQRT_HALF)), derivative


def _tanh(x32):
    def derivative():
        t = ops.tanh(_SQRT_2_OVER_PI * (x32 + _CUBIC * x32 * x32 * x32))
        return 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * _CUBIC * x32 * x32)

    return keras.activations.gelu(x32, approximate=True), derivative


def _with_derivative(form):
    @ops.custom_gradient
    def gelu(x):
        dtype = keras.backend.standardize_dtype(x.dtype)
        outputs, _ = form(ops.cast(x, "float32"))

        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            # Recomputed from `x` alone, so that nothing of the forward pass but `x` is kept.
            _, derivative = form(ops.cast(x, "float32"))
            return ops.cast(ops.cast(upstream, "float32") * derivative(), dtype)

        return ops.cast(outputs, dtype), grad

    return gelu


_GELU = {False: _with_derivative(_exact), True: _with_derivative(_tanh)}


def gelu(x, approximate=False):
    """GELU computed in float32 whatever the input's dtype, returned in that dtype.

    Exact: `0.5 x (1 + erf(x / sqrt(2)))`; approximate: the tanh form of the
    official JAX code, `0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))`.
    The gradient is the closed-form derivative, computed from `x` alone,
    except under XLA, which is left to derive and fuse its own.

    Example:

    >>> float(gelu(np.float32(1.0)))  # 0.5 * (1 + erf(1 / sqrt(2)))
    0.8413447141647339
    """
    x = ops.convert_to_tensor(x)
    if xla_compiling():  # XLA fuses the automatic gradient better (keras_vit.compiling)
        dtype = keras.backend.standardize_dtype(x.dtype)
        return ops.cast((_tanh if approximate else _exact)(ops.cast(x, "float32"))[0], dtype)
    return _GELU[bool(approximate)](x)
