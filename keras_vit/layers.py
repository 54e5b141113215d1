"""The layers of the Vision Transformer, written with `keras.ops` only.

Reference: "An Image is Worth 16x16 Words: Transformers for Image Recognition
at Scale" (Dosovitskiy et al., ICLR 2021, https://arxiv.org/abs/2010.11929).
Every layer here is registered as serializable, so a saved `.keras` model
loads with `safe_mode=True` and without `custom_objects`.
"""

import math

import keras
from keras import ops

from keras_vit import attention as fused_attention
from keras_vit import mlp as fused_mlp
from keras_vit import normalization
from keras_vit.activations import gelu
from keras_vit.position import PACKAGE, POSITION_EMBEDDINGS, AddPositionEmbedding, sincos_2d_embedding  # noqa: F401
from keras_vit.position import grid_pair as _pair
from keras_vit.relative import RelativePositionAttention

POOLING_MODES = ("token", "avg", "max")


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
        if height is not None and width is not None:  # constant sizes keep exported reshapes static
            return ops.reshape(x, (-1, (height // ph) * (width // pw), self.hidden_size))
        return ops.reshape(x, (ops.shape(x)[0], ops.shape(x)[1] * ops.shape(x)[2], self.hidden_size))

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
    `MlpBlock_3_Dense_0`, `MlpBlock_3_Dense_1`). The block computes the
    attention on those weights with fused products
    (`keras_vit.attention.self_attention`: one q/k/v product per block),
    which gives the layer's own result up to float rounding, faster; its
    LayerNorms and GELU run with their gradients written out
    (`keras_vit.normalization`, `keras_vit.activations`).

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
        # The fused attention and MLP take their LayerNorm in, so its output is not kept for training.
        if fused_attention.can_fuse(self.attention):
            attended = fused_attention.self_attention(
                self.attention, inputs, training=training, return_attention_scores=return_attention_scores,
                norm=self.attention_norm,
            )
        else:
            x = normalization.normalize(self.attention_norm, inputs)
            attended = self.attention(x, x, training=training, return_attention_scores=return_attention_scores)
        if return_attention_scores:
            attended, scores = attended
        attended = self.attention_output_dropout(attended, training=training)
        x = inputs + self.drop_path(attended, training=training)

        if fused_mlp.can_fuse(self.mlp_dense_0, self.mlp_dense_1, self.mlp_dropout_0, training):
            y = fused_mlp.mlp(self.mlp_dense_0, self.mlp_dense_1, x, self.gelu_approximate, norm=self.mlp_norm)
        else:
            y = self.mlp_dense_0(normalization.normalize(self.mlp_norm, x))
            y = gelu(y, approximate=self.gelu_approximate)
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
