"""Self-attention computed with fused matrix products on the weights of a `keras.layers.MultiHeadAttention`.

`TransformerBlock` keeps its attention weights in a Keras `MultiHeadAttention`
(q/k/v kernels `(D, H, D/H)`, output `(H, D/H, D)`: the official checkpoint
shapes), but runs self-attention through `self_attention` below rather than
through the layer's own call, which projects with three `EinsumDense`
contractions and attends with two transposing einsums. Here:

- q, k and v come from one `(B*T, D) x (D, 3D)` product (the three kernels
  viewed as 2-D and concatenated), which CPUs run as one large GEMM;
- the heads are laid out `(B, H, T, D/H)` once, so both attention products are
  plain batched matrix products;
- the output projection is one `(B*T, D) x (D, D)` product.

The softmax is computed in float32 whatever the compute dtype (as
`keras.ops.dot_product_attention` does). For training, outside XLA:

- the backward pass recomputes the attention probabilities from the kept query
  and key instead of keeping them (`_attend`): the `B x H x T x T` float32
  tensor is the largest a block keeps, and recomputing it costs one more
  `query key^T` and softmax;
- given the block's LayerNorm (`norm`), the q/k/v product takes it in and its
  backward pass recomputes the normalised input
  (`keras_vit.normalization.normalized_product`).

The result equals the layer's own call up to float rounding
(`tests/test_attention.py`); speed and memory are measured in
`benchmarks/RESULTS.md` ("Second round", "Fourth round").
"""

import keras
from keras import ops

from keras_vit import normalization
from keras_vit.compiling import after, xla_compiling


def can_fuse(attention):
    """Whether `self_attention` computes what `attention(x, x)` would.

    True for a plain `keras.layers.MultiHeadAttention` (not a subclass with
    its own attention rule) with biases, default axes and unquantised
    kernels.
    """
    denses = (attention.query_dense, attention.key_dense, attention.value_dense, attention.output_dense)
    return (
        type(attention) is keras.layers.MultiHeadAttention
        and attention._use_bias
        and not attention._use_gate
        and attention._attention_axes in (None, (1,))
        and attention._key_dim == attention._value_dim
        and all(getattr(dense, "quantization_mode", None) is None for dense in denses)
    )


def _softmax_gradient(probabilities, d_weights):
    """The gradient of the logits, in `d_weights`' dtype, from the float32 softmax `probabilities` and
    the gradient of the weights that came from them."""
    d = ops.cast(d_weights, "float32")
    return ops.cast(probabilities * (d - ops.sum(d * probabilities, axis=-1, keepdims=True)), d_weights.dtype)


def _probabilities(query, key):
    """The float32 softmax of `query key^T` over `(B, H, T, D/H)` heads."""
    return ops.softmax(ops.cast(ops.einsum("bhtd,bhsd->bhts", query, key), "float32"), axis=-1)


@ops.custom_gradient
def _attend(query, key, value):
    """`softmax(query key^T) value` over `(B, H, T, D/H)` heads (query already scaled), float32 softmax.

    The backward pass recomputes the probabilities from the kept query and key (one more
    `query key^T` and softmax) instead of keeping them: `B x H x T x T` float32 per block, the
    largest tensor of a training step's attention.
    """
    context = ops.einsum("bhts,bhsd->bhtd", ops.cast(_probabilities(query, key), query.dtype), value)

    def grad(*args, upstream=None):
        upstream = args[0] if upstream is None else upstream
        kept_query, kept_key, kept_value = after(upstream, query, key, value)
        recomputed = _probabilities(kept_query, kept_key)  # the logits are freed here
        d_value = ops.einsum("bhts,bhtd->bhsd", ops.cast(recomputed, query.dtype), upstream)
        d_logits = _softmax_gradient(recomputed, ops.einsum("bhtd,bhsd->bhts", upstream, kept_value))
        d_query = ops.einsum("bhts,bhsd->bhtd", d_logits, kept_key)
        d_key = ops.einsum("bhts,bhtd->bhsd", d_logits, kept_query)
        return d_query, d_key, d_value

    return context, grad


def self_attention(attention, inputs, training=None, return_attention_scores=False, norm=None):
    """`attention(inputs, inputs)` of a `MultiHeadAttention`, with fused products.

    Args:
        attention: a built `keras.layers.MultiHeadAttention` for which
            `can_fuse` is true.
        inputs: tensor of shape `(batch, tokens, D)` in the compute dtype.
        training: Python bool; attention dropout is applied when true.
        return_attention_scores: bool; also return the float32 attention
            probabilities, shape `(batch, heads, tokens, tokens)`.
        norm: optional normalization layer to apply to `inputs` first. Where
            `keras_vit.normalization.can_fuse` is true for it, outside XLA,
            its output is recomputed in the backward pass rather than kept
            (`normalization.normalized_product`).

    Returns:
        Tensor of shape `(batch, tokens, D_out)`, and the probabilities when
        asked for.
    """
    heads, head_dim = attention._num_heads, attention._key_dim
    width = heads * head_dim
    dtype = attention.compute_dtype
    features = inputs.shape[-1]

    def flat(dense, shape):
        return ops.reshape(ops.cast(dense.kernel, dtype), shape), ops.reshape(ops.cast(dense.bias, dtype), (-1,))

    projections = [flat(dense, (features, width))
                   for dense in (attention.query_dense, attention.key_dense, attention.value_dense)]
    kernel = ops.concatenate([k for k, _ in projections], axis=1)
    bias = ops.concatenate([b for _, b in projections], axis=0)

    # Static sizes where known: a reshape to constant sizes (-1 for the batch) stays static in exported
    # graphs, where a shape read at run time splits a LiteRT graph among delegates.
    tokens = inputs.shape[1] if inputs.shape[1] is not None else ops.shape(inputs)[1]
    compiling = xla_compiling()
    if norm is not None and not compiling and normalization.can_fuse(norm):
        qkv = normalization.normalized_product(norm, ops.cast(inputs, dtype), kernel, bias)
    else:
        if norm is not None:
            inputs = normalization.normalize(norm, inputs)
        qkv = ops.matmul(ops.reshape(ops.cast(inputs, dtype), (-1, features)), kernel) + bias
    qkv = ops.transpose(ops.reshape(qkv, (-1, tokens, 3, heads, head_dim)), (2, 0, 3, 1, 4))
    # Splitting (not indexing) keeps the gradient one concatenation, not three zero-padded copies; a
    # split (not an unstack) is also what LiteRT's XNNPACK delegate runs, so the graph stays whole.
    query, key, value = (ops.reshape(part, (-1, heads, tokens, head_dim)) for part in ops.split(qkv, 3, axis=0))

    query = query * ops.cast(attention._inverse_sqrt_key_dim, dtype)
    dropping = bool(training) and attention._dropout > 0.0
    if compiling or dropping or return_attention_scores:
        # XLA schedules its own recomputation; dropout and the returned maps need the probabilities.
        probabilities = _probabilities(query, key)
        weights = ops.cast(probabilities, dtype)
        if dropping:
            weights = attention._dropout_layer(weights, training=training)
        context = ops.einsum("bhts,bhsd->bhtd", weights, value)
    else:
        context = _attend(query, key, value)

    out_kernel, out_bias = flat(attention.output_dense, (width, -1))
    context = ops.reshape(ops.transpose(context, (0, 2, 1, 3)), (-1, width))
    outputs = ops.reshape(ops.matmul(context, out_kernel) + out_bias, (-1, tokens, out_kernel.shape[-1]))
    if return_attention_scores:
        return outputs, probabilities
    return outputs
