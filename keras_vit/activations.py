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

from keras_vit.compiling import after, xla_compiling

_SQRT_HALF = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_CUBIC = 0.044715


# The forward expressions are written as TensorFlow's converters expect them: the LiteRT converter
# turns exactly these patterns into its GELU builtin (another arrangement leaves an unsupported Erf).
def _exact(x32):
    return 0.5 * x32 * (1.0 + ops.erf(x32 * _SQRT_HALF))


def _cdf(x32):
    return 0.5 * (1.0 + ops.erf(x32 * _SQRT_HALF))


def _exact_slope(x32, cdf):
    return cdf + x32 * ops.exp(-0.5 * x32 * x32) * _INV_SQRT_2PI


def _exact_derivative(x32):
    return _exact_slope(x32, _cdf(x32))


def _exact_and_derivative(x32):
    cdf = _cdf(x32)
    return x32 * cdf, _exact_slope(x32, cdf)


def _tanh(x32):
    return keras.activations.gelu(x32, approximate=True)


def _tanh_inner(x32):
    return ops.tanh(_SQRT_2_OVER_PI * (x32 + _CUBIC * x32 * x32 * x32))


def _tanh_slope(x32, t):
    return 0.5 * (1.0 + t) + 0.5 * x32 * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * _CUBIC * x32 * x32)


def _tanh_derivative(x32):
    return _tanh_slope(x32, _tanh_inner(x32))


def _tanh_and_derivative(x32):
    t = _tanh_inner(x32)
    return 0.5 * x32 * (1.0 + t), _tanh_slope(x32, t)


# approximate -> (GELU, its derivative), both of float32 tensors
_FORMS = {False: (_exact, _exact_derivative), True: (_tanh, _tanh_derivative)}
# approximate -> GELU and its derivative together, sharing erf/tanh (for a backward pass that needs both)
VALUE_AND_DERIVATIVE = {False: _exact_and_derivative, True: _tanh_and_derivative}


def _in_float32(function, x):
    """`function` of `x` computed in float32 and returned in `x`'s dtype."""
    dtype = keras.backend.standardize_dtype(x.dtype)
    return ops.cast(function(ops.cast(x, "float32")), dtype)


def _with_derivative(value, derivative):
    @ops.custom_gradient
    def gelu(x):
        def grad(*args, upstream=None):
            upstream = args[0] if upstream is None else upstream
            # Computed from `x` alone, so that nothing of the forward pass but `x` is kept.
            (kept,) = after(upstream, x)
            return _in_float32(lambda x32: ops.cast(upstream, "float32") * derivative(x32), kept)

        return _in_float32(value, x), grad

    return gelu


_GELU = {approximate: _with_derivative(*forms) for approximate, forms in _FORMS.items()}


def gelu_autodiff(x, approximate=False):
    """The same GELU, in float32, left to automatic differentiation (what `gelu` does under XLA)."""
    return _in_float32(_FORMS[bool(approximate)][0], ops.convert_to_tensor(x))


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
    if xla_compiling():  # XLA fuses the automatic gradient better (keras_vit.compiling)
        return gelu_autodiff(x, approximate)
    return _GELU[bool(approximate)](ops.convert_to_tensor(x))
