"""Position embeddings of the ViT tokens: the kinds of the paper's ablation (appendix D.4).

`AddPositionEmbedding` adds 1-D learned, 2-D learned or fixed 2-D sin-cos
embeddings to the token sequence, or nothing (`"none"`, and `"relative"`,
whose position information lives in the attention of every block: see
`keras_vit.relative`). `keras_vit.layers` re-exports what is here.
"""

import keras
import numpy as np
from keras import ops

PACKAGE = "keras_vit"
POSITION_EMBEDDINGS = ("learned", "learned_2d", "sincos_2d", "relative", "none")


def grid_pair(value, name):
    """`(h, w)` from an int or a pair of positive ints; `name` is for the error message."""
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints. Received: {name}={value}"
        )
    return value



def sincos_2d_embedding(grid_size, hidden_size, temperature=10000.0):
    """Fixed 2-D sin-cos position embeddings of a `(gh, gw)` grid, shape `(gh*gw, D)`.

    Columns are `[sin(x), cos(x), sin(y), cos(y)]`, each of width D/4, with
    frequencies `temperature ** -(k / (D/4 - 1))` as in big_vision.
    """
    gh, gw = grid_size
    if hidden_size % 4:
        raise ValueError(
            f"2-D sin-cos position embeddings need a width divisible by 4. Received: hidden_size={hidden_size}"
        )
    quarter = hidden_size // 4
    y, x = np.meshgrid(np.arange(gh, dtype=np.float64), np.arange(gw, dtype=np.float64), indexing="ij")
    omega = 1.0 / temperature ** (np.arange(quarter) / max(quarter - 1, 1))
    y = y.reshape(-1)[:, None] * omega[None]
    x = x.reshape(-1)[:, None] * omega[None]
    return np.concatenate([np.sin(x), np.cos(x), np.sin(y), np.cos(y)], axis=1).astype("float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class AddPositionEmbedding(keras.layers.Layer):
    """Adds position embeddings to a token sequence (prefix tokens first).

    The kinds of the paper's ablation (Table 8, appendix D.4):

    - `"learned"`: one learned vector per token, `(1, prefix + gh*gw, D)`,
      initialised normal(stddev=0.02). The paper's default.
    - `"learned_2d"`: a learned row (Y) and column (X) embedding of width D/2
      each, concatenated per patch; prefix tokens get learned vectors of
      their own.
    - `"sincos_2d"`: fixed 2-D sin-cos embeddings; prefix tokens get zeros.
    - `"relative"`: nothing is added here; every `TransformerBlock` built
      with `relative_position=True` adds a learned bias per 1-D token offset
      to its attention logits (`keras_vit.relative`).
    - `"none"`: no position information.

    The layer knows its patch grid, so checkpoints can be resized for
    another resolution.

    Args:
        grid_size: int or pair `(gh, gw)`, the patch grid.
        embedding_type: one of `"learned"`, `"learned_2d"`, `"sincos_2d"`,
            `"relative"`, `"none"`. Defaults to `"learned"`.
        num_prefix_tokens: int, tokens before the patches (1 with a class
            token, 0 without). Defaults to `1`.
        initializer: initializer of the learned embeddings. Defaults to
            normal(stddev=0.02).

    Call arguments:
        inputs: tensor of shape `(batch, num_prefix_tokens + gh*gw, D)`.

    Returns:
        Tensor of the same shape.

    Example:

    >>> tuple(AddPositionEmbedding((2, 3))(np.zeros((1, 7, 8))).shape)
    (1, 7, 8)
    """

    def __init__(
        self,
        grid_size,
        embedding_type="learned",
        num_prefix_tokens=1,
        initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if embedding_type not in POSITION_EMBEDDINGS:
            raise ValueError(
                f"`embedding_type` must be one of {POSITION_EMBEDDINGS}. "
                f"Received: embedding_type={embedding_type!r}"
            )
        self.grid_size = grid_pair(grid_size, "grid_size")
        self.embedding_type = embedding_type
        self.num_prefix_tokens = num_prefix_tokens
        self.initializer = keras.initializers.get(
            initializer or keras.initializers.RandomNormal(stddev=0.02)
        )

    @property
    def num_tokens(self):
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    def build(self, input_shape):
        if input_shape[1] is not None and input_shape[1] != self.num_tokens:
            raise ValueError(
                f"AddPositionEmbedding with grid_size={self.grid_size} and "
                f"num_prefix_tokens={self.num_prefix_tokens} expects {self.num_tokens} tokens. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        width = input_shape[-1]
        gh, gw = self.grid_size
        if self.embedding_type == "learned":
            self.pos_embedding = self.add_weight(
                name="pos_embedding", shape=(1, self.num_tokens, width), initializer=self.initializer
            )
        elif self.embedding_type == "learned_2d":
            if width % 2:
                raise ValueError(
                    f"Learned 2-D position embeddings need an even width. Received: input_shape={tuple(input_shape)}"
                )
            self.row_embedding = self.add_weight(
                name="row_embedding", shape=(gh, width // 2), initializer=self.initializer
            )
            self.column_embedding = self.add_weight(
                name="column_embedding", shape=(gw, width // 2), initializer=self.initializer
            )
            if self.num_prefix_tokens:
                self.prefix_embedding = self.add_weight(
                    name="prefix_embedding",
                    shape=(1, self.num_prefix_tokens, width),
                    initializer=self.initializer,
                )
        elif self.embedding_type == "sincos_2d":
            table = sincos_2d_embedding(self.grid_size, width)
            prefix = np.zeros((self.num_prefix_tokens, width), "float32")
            self._fixed_table = np.concatenate([prefix, table])[None]

    def embedding(self):
        """Returns the full `(1, tokens, D)` position embedding as a tensor."""
        if self.embedding_type == "learned":
            return self.pos_embedding
        if self.embedding_type == "sincos_2d":
            return ops.convert_to_tensor(self._fixed_table)
        if self.embedding_type == "learned_2d":
            gh, gw = self.grid_size
            half = ops.shape(self.row_embedding)[-1]
            rows = ops.broadcast_to(self.row_embedding[:, None, :], (gh, gw, half))
            cols = ops.broadcast_to(self.column_embedding[None, :, :], (gh, gw, half))
            grid = ops.reshape(ops.concatenate([rows, cols], axis=-1), (1, gh * gw, 2 * half))
            if self.num_prefix_tokens:
                grid = ops.concatenate([self.prefix_embedding, grid], axis=1)
            return grid
        return None

    def call(self, inputs):
        table = self.embedding()
        if table is None:
            return inputs
        return inputs + ops.cast(table, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "grid_size": self.grid_size,
                "embedding_type": self.embedding_type,
                "num_prefix_tokens": self.num_prefix_tokens,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
