"""The layers of the Vision Transformer, written with `keras.ops` only.

Reference: "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale" (Dosovitskiy et al., ICLR 2021, https://arxiv.org/abs/2010.11929).
Every layer here is registered as serializable, so a saved `.keras` model
loads with `safe_mode=True` and without `custom_objects`.
"""

import math

import keras
import numpy as np
from keras import ops

from keras_vit.relative import RelativePositionAttention

PACKAGE = "keras_vit"
POSITION_EMBEDDINGS = ("learned", "learned_2d", "sincos_2d", "relative", "none")
POOLING_MODES = ("token", "avg", "max")


def _pair(value, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of positive ints. Received: {name}={value}"
        )
    return value


@keras.saving.register_keras_serializable(package=PACKAGE)
class DropPath(keras.layers.Layer):
    """Stochastic depth: drops the whole residual branch of a sample.

    "Deep Networks with Stochastic Depth" (Huang et al., 2016,
    https://arxiv.org/abs/1603.09382). In training each sample's branch is kept
    with probability `1 - rate` and scaled by `1 / (1 - rate)`; at inference the
    layer is the identity.

    Args:
        rate: float in [0, 1), the probability of dropping a sample's branch.
            Defaults to `0.0`.
        seed: optional int, seed of the random generator.

    Call arguments:
        inputs: tensor of shape `(batch, ...)`.
        training: Python bool, whether to drop.

    Returns:
        Tensor of the same shape as `inputs`.

    Example:

    >>> layer = DropPath(0.5, seed=1)
    >>> tuple(layer(np.ones((4, 3, 2)), training=False).shape)
    (4, 3, 2)
    """

    def __init__(self, rate=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"`rate` must be in [0, 1). Received: rate={rate}")
        self.rate = rate
        self.seed = seed
        if rate > 0:
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        if not training or self.rate == 0:
            return inputs
        noise_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
        return keras.random.dropout(
            inputs, self.rate, noise_shape=noise_shape, seed=self.seed_generator
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class PatchEncoder(keras.layers.Layer):
    """Splits an image into patches and embeds each one linearly.

    A Conv2D with kernel = stride = patch size and VALID padding (the paper's
    "patch embedding", Eq. 1), whose kernel is HWIO like the official
    checkpoints, followed by a row-major flatten of the patch grid.

    Args:
        patch_size: int or pair `(height, width)`, side of a patch in pixels.
        hidden_size: int, the embedding width D.
        kernel_initializer: initializer of the projection. Defaults to
            `"lecun_normal"` (the official code's).
        bias_initializer: initializer of the bias. Defaults to `"zeros"`.

    Call arguments:
        inputs: images of shape `(batch, height, width, channels)`, height and
            width multiples of the patch size.

    Returns:
        Tensor of shape `(batch, (height // ph) * (width // pw), hidden_size)`.

    Example:

    >>> tuple(PatchEncoder(8, 32)(np.zeros((2, 32, 48, 3))).shape)
    (2, 24, 32)
    """

    def __init__(
        self,
        patch_size,
        hidden_size,
        kernel_initializer="lecun_normal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        patch = _pair(patch_size, "patch_size")
        self.projection = keras.layers.Conv2D(
            hidden_size,
            kernel_size=patch,
            strides=patch,
            padding="valid",
            data_format="channels_last",
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            dtype=self.dtype_policy,
            name="projection",
        )

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(
                "PatchEncoder expects images of shape (batch, height, width, channels). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        patch = _pair(self.patch_size, "patch_size")
        for size, p in zip(input_shape[1:3], patch):
            if size is not None and size % p:
                raise ValueError(
                    f"The image height and width must be multiples of the patch size {patch}. "
                    f"Received: input_shape={tuple(input_shape)}"
                )
        self.projection.build(input_shape)

    def call(self, inputs):
        x = self.projection(inputs)
        # The patch count comes from the image size, not from -1 or the convolution's output: on an
        # empty batch TensorFlow's convolution reports the input's height and width.
        (ph, pw), (height, width) = _pair(self.patch_size, "patch_size"), inputs.shape[1:3]
        if height is not None and width is not None:
            num_patches = (height // ph) * (width // pw)
        else:
            num_patches = ops.shape(x)[1] * ops.shape(x)[2]
        return ops.reshape(x, (ops.shape(x)[0], num_patches, self.hidden_size))

    def compute_output_shape(self, input_shape):
        patch = _pair(self.patch_size, "patch_size")
        if input_shape[1] is None or input_shape[2] is None:
            return (input_shape[0], None, self.hidden_size)
        n = (input_shape[1] // patch[0]) * (input_shape[2] // patch[1])
        return (input_shape[0], n, self.hidden_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "patch_size": self.patch_size,
                "hidden_size": self.hidden_size,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class AddClassToken(keras.layers.Layer):
    """Prepends a learned class token to a sequence of patch embeddings.

    The token is a `(1, 1, D)` parameter, zero-initialised as in the official
    code; after the encoder its final state is the image representation.

    Args:
        initializer: initializer of the token. Defaults to `"zeros"`.

    Call arguments:
        inputs: tensor of shape `(batch, num_patches, D)`.

    Returns:
        Tensor of shape `(batch, num_patches + 1, D)`.

    Example:

    >>> tuple(AddClassToken()(np.ones((2, 4, 8))).shape)
    (2, 5, 8)
    """

    def __init__(self, initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.initializer = keras.initializers.get(initializer)

    def build(self, input_shape):
        self.cls = self.add_weight(
            name="cls", shape=(1, 1, input_shape[-1]), initializer=self.initializer
        )

    def call(self, inputs):
        cls = ops.cast(self.cls, inputs.dtype)
        cls = ops.broadcast_to(cls, (ops.shape(inputs)[0], 1, ops.shape(inputs)[-1]))
        return ops.concatenate([cls, inputs], axis=1)

    def compute_output_shape(self, input_shape):
        tokens = None if input_shape[1] is None else input_shape[1] + 1
        return (input_shape[0], tokens, input_shape[2])

    def get_config(self):
        config = super().get_config()
        config["initializer"] = keras.initializers.serialize(self.initializer)
        return config


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
        self.grid_size = _pair(grid_size, "grid_size")
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


@keras.saving.register_keras_serializable(package=PACKAGE)
class TransformerBlock(keras.layers.Layer):
    """One pre-LN Transformer encoder block of ViT (paper Eq. 2-3).

    `x = x + DropPath(Dropout(MHA(LN(x))))`, then
    `x = x + DropPath(MLP(LN(x)))` with `MLP = Dense(mlp_dim) -> GELU ->
    Dropout -> Dense(D) -> Dropout`. Attention is a
    `keras.layers.MultiHeadAttention` with separate q/k/v projections, whose
    kernels have the official checkpoint shapes: q/k/v `(D, H, D/H)`, output
    `(H, D/H, D)`. Sublayer names follow the official checkpoint
    (`LayerNorm_0`, `MultiHeadDotProductAttention_1`, `LayerNorm_2`,
    `MlpBlock_3_Dense_0`, `MlpBlock_3_Dense_1`).

    Args:
        num_heads: int, number of attention heads; must divide the width.
        mlp_dim: int, hidden width of the MLP.
        dropout_rate: float, dropout after attention and in the MLP.
            Defaults to `0.0`.
        attention_dropout_rate: float, dropout on the attention
            probabilities. Defaults to `0.0`.
        drop_path_rate: float, stochastic depth rate. Defaults to `0.0`.
        gelu_approximate: bool, `True` for the tanh GELU of the official JAX
            code, `False` for the exact erf GELU of timm and Hugging Face.
            Defaults to `False`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        relative_position: bool; if `True` the attention adds a learned bias
            per relative token offset to its logits
            (`keras_vit.relative.RelativePositionAttention`, the paper's
            relative position embedding). Defaults to `False`.

    Call arguments:
        inputs: tensor of shape `(batch, tokens, D)`.
        training: Python bool, whether dropout and stochastic depth are on.
        return_attention_scores: bool; if `True` also returns the attention
            probabilities, shape `(batch, num_heads, tokens, tokens)`.

    Returns:
        Tensor of shape `(batch, tokens, D)`, and the attention probabilities
        when asked for.

    Example:

    >>> block = TransformerBlock(num_heads=2, mlp_dim=16)
    >>> y, probs = block(np.ones((1, 5, 8)), return_attention_scores=True)
    >>> tuple(y.shape), tuple(probs.shape)
    ((1, 5, 8), (1, 2, 5, 5))
    """

    def __init__(
        self,
        num_heads,
        mlp_dim,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        gelu_approximate=False,
        layer_norm_epsilon=1e-6,
        relative_position=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.relative_position = bool(relative_position)
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.dropout_rate = dropout_rate
        self.attention_dropout_rate = attention_dropout_rate
        self.drop_path_rate = drop_path_rate
        self.gelu_approximate = gelu_approximate
        self.layer_norm_epsilon = layer_norm_epsilon
        common = {"dtype": self.dtype_policy}
        self.attention_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="LayerNorm_0", **common
        )
        self.attention_output_dropout = keras.layers.Dropout(
            dropout_rate, name="attention_output_dropout", **common
        )
        self.mlp_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, name="LayerNorm_2", **common
        )
        self.mlp_dense_0 = keras.layers.Dense(
            mlp_dim,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            name="MlpBlock_3_Dense_0",
            **common,
        )
        self.mlp_dropout_0 = keras.layers.Dropout(dropout_rate, name="mlp_dropout_0", **common)
        self.mlp_dropout_1 = keras.layers.Dropout(dropout_rate, name="mlp_dropout_1", **common)
        self.drop_path = DropPath(drop_path_rate, name="drop_path", **common)

    def build(self, input_shape):
        width = input_shape[-1]
        if width % self.num_heads:
            raise ValueError(
                f"The token width must be divisible by num_heads={self.num_heads}. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        common = {"dtype": self.dtype_policy}
        # Glorot-uniform over the 2-D (D, heads * head_dim) view of each kernel,
        # as the official code initialises its attention: both fans sum to 2D.
        limit = math.sqrt(3.0 / width)
        attention_class, extra = keras.layers.MultiHeadAttention, {}
        if self.relative_position:
            attention_class, extra = RelativePositionAttention, {"num_tokens": int(input_shape[1])}
        self.attention = attention_class(
            **extra,
            num_heads=self.num_heads,
            key_dim=width // self.num_heads,
            dropout=self.attention_dropout_rate,
            kernel_initializer=keras.initializers.RandomUniform(-limit, limit),
            bias_initializer="zeros",
            name="MultiHeadDotProductAttention_1",
            **common,
        )
        self.mlp_dense_1 = keras.layers.Dense(
            width,
            kernel_initializer="glorot_uniform",
            bias_initializer=keras.initializers.RandomNormal(stddev=1e-6),
            name="MlpBlock_3_Dense_1",
            **common,
        )
        self.attention_norm.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.mlp_norm.build(input_shape)
        self.mlp_dense_0.build(input_shape)
        self.mlp_dense_1.build(tuple(input_shape[:-1]) + (self.mlp_dim,))

    def call(self, inputs, training=None, return_attention_scores=False):
        x = self.attention_norm(inputs)
        attended = self.attention(
            x, x, training=training, return_attention_scores=return_attention_scores
        )
        if return_attention_scores:
            attended, scores = attended
        attended = self.attention_output_dropout(attended, training=training)
        x = inputs + self.drop_path(attended, training=training)

        y = self.mlp_norm(x)
        y = self.mlp_dense_0(y)
        y = keras.activations.gelu(y, approximate=self.gelu_approximate)
        y = self.mlp_dropout_0(y, training=training)
        y = self.mlp_dense_1(y)
        y = self.mlp_dropout_1(y, training=training)
        outputs = x + self.drop_path(y, training=training)
        if return_attention_scores:
            return outputs, scores
        return outputs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "mlp_dim": self.mlp_dim,
                "dropout_rate": self.dropout_rate,
                "attention_dropout_rate": self.attention_dropout_rate,
                "drop_path_rate": self.drop_path_rate,
                "gelu_approximate": self.gelu_approximate,
                "layer_norm_epsilon": self.layer_norm_epsilon,
                "relative_position": self.relative_position,
            }
        )
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class TokenPooling(keras.layers.Layer):
    """Reduces a token sequence to one vector per image.

    Args:
        mode: `"token"` (the first token, i.e. the class token), `"avg"` (mean
            of the patch tokens) or `"max"` (max over the patch tokens).
            Defaults to `"token"`.
        num_prefix_tokens: int, tokens before the patches, excluded from
            `"avg"` and `"max"`. Defaults to `1`.

    Call arguments:
        inputs: tensor of shape `(batch, tokens, D)`.

    Returns:
        Tensor of shape `(batch, D)`.

    Example:

    >>> tuple(TokenPooling("avg")(np.ones((2, 5, 8))).shape)
    (2, 8)
    """

    def __init__(self, mode="token", num_prefix_tokens=1, **kwargs):
        super().__init__(**kwargs)
        if mode not in POOLING_MODES:
            raise ValueError(f"`mode` must be one of {POOLING_MODES}. Received: mode={mode!r}")
        if mode == "token" and num_prefix_tokens < 1:
            raise ValueError(
                "`mode='token'` needs a class token, but this sequence has none "
                f"(num_prefix_tokens={num_prefix_tokens}). Use 'avg' or 'max'."
            )
        self.mode = mode
        self.num_prefix_tokens = num_prefix_tokens
        self.built = True

    def call(self, inputs):
        if self.mode == "token":
            return inputs[:, 0]
        patches = inputs[:, self.num_prefix_tokens :]
        if self.mode == "avg":
            return ops.mean(patches, axis=1)
        return ops.max(patches, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "num_prefix_tokens": self.num_prefix_tokens})
        return config
