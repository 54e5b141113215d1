"""Relative position embeddings: the fourth row of the paper's ablation.

Appendix D.4 of "An Image is Worth 16x16 Words" (Dosovitskiy et al., 2021)
compares no position embedding, 1-D and 2-D learned embeddings, and
relative ones: "1-dimensional Relative Attention, in which we define the
relative distance [of] all possible pairs of patches ... every offset
pq - pk is associated with an embedding. Then we simply run extra attention,
where we use the original query (the content of query), but use relative
positional embeddings as keys. We then use the logits from the relative
attention as a bias term and add it to the logits of the main attention
(content-based attention) before applying softmax."

`RelativePositionAttention` is that: a `keras.layers.MultiHeadAttention`
(same q/k/v/out kernels as the official checkpoints) with one more weight,
`relative_embedding` of shape `(2T - 1, heads, head_dim)` for `T` tokens,
indexed by the 1-D offset `i - j` of the query token `i` and the key token `j`
in the token sequence (class token first, then the patches in row-major
order). A model built with `position_embedding="relative"` adds nothing to
the tokens (`AddPositionEmbedding` passes them through) and uses this layer
in every block, each with its own table.
"""

import keras
import numpy as np
from keras import ops

from keras_vit.position import PACKAGE


def relative_offsets(num_tokens):
    """The `(T, T)` table index of each (query, key) pair: `i - j + T - 1`.

    Example:

    >>> relative_offsets(3).tolist()
    [[2, 1, 0], [3, 2, 1], [4, 3, 2]]
    """
    positions = np.arange(num_tokens)
    return (positions[:, None] - positions[None, :] + num_tokens - 1).astype("int32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class RelativePositionAttention(keras.layers.MultiHeadAttention):
    """Multi-head self-attention with a learned bias per relative offset.

    The bias of query token `i` and key token `j` in head `h` is
    `q_i . r_{i-j} / sqrt(head_dim)`, where `q_i` is the projected query and
    `r` the head's row of `relative_embedding` for that offset; it is added to
    the content logits `q_i . k_j / sqrt(head_dim)` before the softmax.
    Without attention dropout and without asking for the scores, the biased
    logits go through `keras.ops.dot_product_attention`.

    Args:
        num_tokens: int, the sequence length `T` the layer is built for.
        initializer: initializer of the table. Defaults to
            normal(stddev=0.02), like the learned absolute embeddings.
        **kwargs: `keras.layers.MultiHeadAttention` arguments (`num_heads`,
            `key_dim`, `dropout`, ...).

    Example:

    >>> layer = RelativePositionAttention(num_tokens=5, num_heads=2, key_dim=4)
    >>> tuple(layer(np.ones((1, 5, 8)), np.ones((1, 5, 8))).shape)
    (1, 5, 8)
    """

    def __init__(self, num_tokens, initializer=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_tokens, int) or num_tokens < 1:
            raise ValueError(f"`num_tokens` must be a positive int. Received: num_tokens={num_tokens!r}")
        self.num_tokens = num_tokens
        self.initializer = keras.initializers.get(initializer or keras.initializers.RandomNormal(stddev=0.02))
        self._offsets = relative_offsets(num_tokens)

    def build(self, query_shape, value_shape, key_shape=None):
        if query_shape[1] is not None and query_shape[1] != self.num_tokens:
            raise ValueError(
                f"RelativePositionAttention was made for {self.num_tokens} tokens. "
                f"Received: query_shape={tuple(query_shape)}"
            )
        super().build(query_shape, value_shape, key_shape)
        self.relative_embedding = self.add_weight(
            name="relative_embedding",
            shape=(2 * self.num_tokens - 1, self._num_heads, self._key_dim),
            initializer=self.initializer,
        )

    def relative_logits(self, scaled_query):
        """The `(batch, heads, T, T)` bias from a scaled `(batch, T, heads, head_dim)` query."""
        table = ops.cast(self.relative_embedding, scaled_query.dtype)
        by_offset = ops.einsum("btnd,rnd->bntr", scaled_query, table)  # (B, N, T, 2T-1)
        shape = ops.shape(by_offset)
        index = ops.broadcast_to(ops.convert_to_tensor(self._offsets)[None, None], (shape[0], shape[1], shape[2], shape[2]))
        return ops.take_along_axis(by_offset, index, axis=-1)

    def _compute_attention(
        self, query, key, value, attention_mask=None, training=None, return_attention_scores=False, **kwargs
    ):
        scale = ops.cast(self._inverse_sqrt_key_dim, query.dtype)
        bias = self.relative_logits(query * scale)
        if not (self._dropout > 0.0 or return_attention_scores) and attention_mask is None:
            output = ops.dot_product_attention(
                query, key, value, bias=bias, scale=self._inverse_sqrt_key_dim
            )
            return output, None
        logits = ops.einsum(self._dot_product_equation, key, query * scale) + bias
        probabilities = self._masked_softmax(logits, attention_mask)
        dropped = self._dropout_layer(probabilities, training=training) if self._dropout > 0.0 else probabilities
        return ops.einsum(self._combine_equation, dropped, value), probabilities

    def get_config(self):
        config = super().get_config()
        config.update(
            {"num_tokens": self.num_tokens, "initializer": keras.initializers.serialize(self.initializer)}
        )
        return config
