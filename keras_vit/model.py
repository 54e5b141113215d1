"""The ViT builder and the `keras.applications`-style constructors.

`ViT(...)` builds any Vision Transformer from its hyper-parameters; the named
constructors `ViT_Ti16` ... `ViT_H14` are generated from the variant table in
`keras_vit.variants` and share the `keras.applications` signature.
"""

import os

import keras

from keras_vit import layers as vit_layers
from keras_vit.resnet import ResNetStem
from keras_vit.variants import DEFAULT_DROPOUT, HYBRID_VARIANTS, VARIANTS, constructor_name, resnet_config, resnet_stride

CLASSIFIERS = ("token", "gap")
POOLINGS = (None, "avg", "max", "token")
DEFAULT_IMAGE_SIZE = 224
LOCAL_WEIGHT_SUFFIXES = (".weights.h5", ".keras", ".npz", ".safetensors")


def _validate_options(
    include_top, weights, pooling, classes, classifier, classifier_activation, position_embedding
):
    if not (weights is None or isinstance(weights, (str, os.PathLike))):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), "
            "`'imagenet'` (pre-training on ImageNet), `'imagenet21k'`, a catalogue name, "
            f"or the path to the weights file to be loaded. Received: weights={weights!r}"
        )
    if classifier not in CLASSIFIERS:
        raise ValueError(f"`classifier` must be one of {CLASSIFIERS}. Received: classifier={classifier!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}. Received: pooling={pooling!r}")
    if pooling == "token" and classifier == "gap" and not include_top:
        raise ValueError(
            "`pooling='token'` needs a class token, and models with classifier='gap' have none. "
            "Use pooling='avg' or 'max'. Received: pooling='token', classifier='gap'"
        )
    if position_embedding not in vit_layers.POSITION_EMBEDDINGS:
        raise ValueError(
            f"`position_embedding` must be one of {vit_layers.POSITION_EMBEDDINGS}. "
            f"Received: position_embedding={position_embedding!r}"
        )
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(f"`classes` must be a positive int. Received: classes={classes!r}")
    if weights is not None and include_top and classifier_activation not in (None, "softmax"):
        raise ValueError(
            "Only `None` and `softmax` activations are allowed for the `classifier_activation` "
            "argument when using pretrained weights, with `include_top=True`; "
            f"Received: classifier_activation={classifier_activation!r}"
        )


def _resolve_input_shape(input_shape, input_tensor, default_size, patch_size, weights):
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        input_shape = (default_size, default_size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels), channels last. "
            f"Received: input_shape={input_shape}"
        )
    height, width, channels = input_shape
    if height is None or width is None:
        raise ValueError(
            "ViT needs a fixed image height and width (its position embeddings have one per "
            f"patch). Received: input_shape={input_shape}"
        )
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"The input height and width must be multiples of the patch size {patch_size}. "
            f"Received: input_shape={input_shape}"
        )
    if weights is not None and channels != 3:
        raise ValueError(
            "The input must have 3 channels when loading pretrained weights. "
            f"Received: input_shape={input_shape}"
        )
    return input_shape


def ViT(
    num_layers,
    hidden_size,
    mlp_dim,
    num_heads,
    patch_size,
    include_top=True,
    weights=None,
    input_tensor=None,
    input_shape=None,
    pooling=None,
    classes=1000,
    classifier_activation="softmax",
    name="vit",
    classifier="token",
    representation_size=None,
    dropout_rate=0.0,
    attention_dropout_rate=0.0,
    drop_path_rate=0.0,
    position_embedding="learned",
    include_preprocessing=True,
    gelu_approximate=None,
    layer_norm_epsilon=1e-6,
    default_size=DEFAULT_IMAGE_SIZE,
    resnet=None,
):
    """Builds a Vision Transformer.

    "An Image is Worth 16x16 Words: Transformers for Image Recognition at
    Scale" (Dosovitskiy et al., ICLR 2021, https://arxiv.org/abs/2010.11929).
    Use the named constructors (`ViT_B16`, ...) for the paper's variants;
    this builder takes any size, e.g. tiny ones for tests.

    Args:
        num_layers: int, number of Transformer blocks.
        hidden_size: int, token width D.
        mlp_dim: int, hidden width of each block's MLP.
        num_heads: int, attention heads; must divide `hidden_size`.
        patch_size: int, side of a square patch in pixels, or in cells of
            the ResNet feature map with `resnet` (1 for the paper's hybrids).
        include_top: bool, whether to include the classification head.
            Defaults to `True`.
        weights: `None` (random initialization), `"imagenet"` (the best
            ImageNet-1k fine-tune of the variant at 224, or 384 with
            `input_shape=(384, 384, 3)`), `"imagenet21k"`, a catalogue name
            (`keras_vit.checkpoints.list_weights()`), or the path to an
            official `.npz`, a timm or Hugging Face `.safetensors`, or a
            `.weights.h5` / `.keras` file (any image size: position
            embeddings are resized; a head of another size is skipped).
            Catalogue weights set `default_size`, `gelu_approximate` and
            `representation_size`. Defaults to `None`.
        input_tensor: optional Keras tensor to use as the image input.
        input_shape: optional `(height, width, channels)`; height and width
            must be multiples of `patch_size`. Defaults to
            `(default_size, default_size, 3)`.
        pooling: with `include_top=False`, `None` returns every token after
            the final norm, `(batch, tokens, D)`; `"token"` the class token,
            `"avg"` the mean and `"max"` the max of the patch tokens, each
            `(batch, D)`. Ignored with `include_top=True`.
        classes: int, number of classes of the head. Defaults to `1000`.
        classifier_activation: activation of the head, `"softmax"` or `None`
            for logits. Defaults to `"softmax"`.
        name: string, model name. Defaults to `"vit"`.
        classifier: `"token"` (class token) or `"gap"` (mean of the patch
            tokens, no class token). Defaults to `"token"`.
        representation_size: optional int; adds the Dense + tanh
            `pre_logits` layer of the original ImageNet-21k checkpoints,
            applied to the pooled features. Defaults to `None`.
        dropout_rate: float, dropout after the position embeddings and in
            every block. Defaults to `0.0`.
        attention_dropout_rate: float. Defaults to `0.0`.
        drop_path_rate: float, stochastic depth rate of the last block,
            linearly increasing from 0 over depth. Defaults to `0.0`.
        position_embedding: `"learned"` (1-D, the paper's default),
            `"learned_2d"`, `"sincos_2d"`, `"relative"` (a learned attention
            bias per relative token offset in every block, see
            `keras_vit.relative`) or `"none"`: the paper's ablation (appendix
            D.4). Defaults to `"learned"`.
        include_preprocessing: bool; when `True` the model takes RGB pixels in
            [0, 255] and scales them to [-1, 1] inside the graph. Defaults to
            `True`.
        gelu_approximate: bool, tanh GELU (`True`, official JAX checkpoints)
            or exact erf GELU (`False`, timm/Hugging Face). Defaults to
            the checkpoint's with `weights`, else `False`.
        layer_norm_epsilon: float. Defaults to `1e-6`.
        default_size: int, image side used when `input_shape` is not given.
        resnet: optional; makes a hybrid (paper section 3.1): a
            `keras_vit.resnet.ResNetStem` with these stages of bottleneck
            units, e.g. `(3, 4, 9)` or `dict(num_layers=(3, 4, 9), width=64)`,
            turns the images into the feature map that is cut into patches.
            Its stride (16 for three stages) times `patch_size` is then the
            effective patch size. Defaults to `None`.

    Returns:
        A `keras.Model`.

    Example:

    >>> model = ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=10)
    >>> model.output_shape
    (None, 10)
    """
    _validate_options(
        include_top, weights, pooling, classes, classifier, classifier_activation, position_embedding
    )
    from keras_vit import loading  # imports the catalogue, which does not import this module

    resnet = resnet_config(resnet)
    row = dict(num_layers=num_layers, hidden_size=hidden_size, mlp_dim=mlp_dim, num_heads=num_heads,
               patch_size=patch_size, resnet=resnet)
    weights_plan = loading.plan_weights(weights, row, include_top, classes, input_shape)
    if weights_plan is not None and weights_plan["default_size"]:
        default_size = weights_plan["default_size"]
    pixels_per_patch = patch_size * resnet_stride(resnet)
    input_shape = _resolve_input_shape(input_shape, input_tensor, default_size, pixels_per_patch, weights)
    # File checks come after the input-shape checks; the checkpoint decides the
    # numerics (GELU, epsilon) and pre_logits width unless the caller set them.
    overrides = loading.weights_overrides(weights_plan)
    if gelu_approximate is None:
        gelu_approximate = overrides.get("gelu_approximate", False)
    if layer_norm_epsilon == 1e-6 and overrides.get("layer_norm_epsilon"):
        layer_norm_epsilon = overrides["layer_norm_epsilon"]
    if representation_size is None:
        representation_size = overrides.get("representation_size")

    if input_tensor is None:
        image_input = keras.layers.Input(shape=input_shape, name="images")
    elif not keras.backend.is_keras_tensor(input_tensor):
        image_input = keras.layers.Input(tensor=input_tensor, shape=input_shape, name="images")
    else:
        image_input = input_tensor

    x = image_input
    if include_preprocessing:
        x = keras.layers.Rescaling(scale=1.0 / 127.5, offset=-1.0, name="rescaling")(x)
    if resnet is not None:
        x = ResNetStem(**resnet, name="resnet")(x)
    x = vit_layers.PatchEncoder(patch_size, hidden_size, name="embedding")(x)
    num_prefix_tokens = 1 if classifier == "token" else 0
    if num_prefix_tokens:
        x = vit_layers.AddClassToken(name="class_token")(x)
    grid = (input_shape[0] // pixels_per_patch, input_shape[1] // pixels_per_patch)
    x = vit_layers.AddPositionEmbedding(
        grid, position_embedding, num_prefix_tokens=num_prefix_tokens, name="posembed_input"
    )(x)
    x = keras.layers.Dropout(dropout_rate, name="dropout")(x)
    for i in range(num_layers):
        x = vit_layers.TransformerBlock(
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            dropout_rate=dropout_rate,
            attention_dropout_rate=attention_dropout_rate,
            drop_path_rate=drop_path_rate * i / max(num_layers - 1, 1),
            gelu_approximate=gelu_approximate,
            layer_norm_epsilon=layer_norm_epsilon,
            relative_position=position_embedding == "relative",
            name=f"encoderblock_{i}",
        )(x)
    x = keras.layers.LayerNormalization(epsilon=layer_norm_epsilon, name="encoder_norm")(x)

    pool_mode = ("token" if classifier == "token" else "avg") if include_top else pooling
    if pool_mode is not None:
        x = vit_layers.TokenPooling(pool_mode, num_prefix_tokens=num_prefix_tokens, name="pool")(x)
        if representation_size is not None:
            x = keras.layers.Dense(representation_size, activation="tanh", name="pre_logits")(x)
    if include_top:
        x = keras.layers.Dense(
            classes,
            activation=classifier_activation,
            kernel_initializer="zeros",
            bias_initializer="zeros",
            name="head",
        )(x)

    inputs = keras.utils.get_source_inputs(input_tensor) if input_tensor is not None else image_input
    model = keras.Model(inputs, x, name=name)
    if weights_plan is not None:
        loading.load_planned(model, weights_plan)
    return model


def _make_constructor(variant):
    """Generates the `keras.applications`-style constructor of one variant."""
    row = VARIANTS.get(variant) or HYBRID_VARIANTS[variant]
    model_name = constructor_name(variant).lower()

    def constructor(
        include_top=True,
        weights="imagenet",
        input_tensor=None,
        input_shape=None,
        pooling=None,
        classes=1000,
        classifier_activation="softmax",
        name=None,
        **kwargs,
    ):
        return ViT(
            **row,
            include_top=include_top,
            weights=weights,
            input_tensor=input_tensor,
            input_shape=input_shape,
            pooling=pooling,
            classes=classes,
            classifier_activation=classifier_activation,
            name=name or model_name,
            **kwargs,
        )

    constructor.__name__ = constructor.__qualname__ = constructor_name(variant)
    constructor.__doc__ = _CONSTRUCTOR_DOC.format(
        variant=variant,
        constructor=constructor_name(variant),
        paper_dropout=DEFAULT_DROPOUT.get(variant, 0.0),
        model_name=model_name,
        hybrid=_HYBRID_DOC.format(**row, stride=resnet_stride(resnet_config(row["resnet"]))) if "resnet" in row else "",
        multiple=row["patch_size"] * resnet_stride(resnet_config(row.get("resnet"))),
        **{k: v for k, v in row.items() if k != "resnet"},
    )
    return constructor


_CONSTRUCTOR_DOC = """Instantiates the ViT-{variant} architecture.

    "An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021,
    https://arxiv.org/abs/2010.11929): {num_layers} layers, width
    {hidden_size}, MLP {mlp_dim}, {num_heads} heads, {patch_size}x{patch_size}
    patches{hybrid}. The paper pre-trains it on ImageNet-21k with dropout
    {paper_dropout}.

    The model takes RGB pixels in [0, 255] (`include_preprocessing=True`,
    the default); `keras_vit.preprocess_input` is then a pass-through.

    Args:
        include_top: whether to include the classification head.
        weights: `None` (random initialization), `"imagenet"`,
            `"imagenet21k"`, a catalogue name, or the path to a `.npz`,
            `.safetensors`, `.weights.h5` or `.keras` file.
        input_tensor: optional Keras tensor to use as image input.
        input_shape: optional `(height, width, 3)`, multiples of
            {multiple}. Defaults to `(224, 224, 3)`.
        pooling: with `include_top=False`: `None` (all tokens), `"token"`,
            `"avg"` or `"max"`.
        classes: number of classes of the head.
        classifier_activation: `"softmax"` or `None`.
        name: model name. Defaults to `"{model_name}"`.
        **kwargs: ViT options passed to `keras_vit.ViT`: `classifier`,
            `representation_size`, `dropout_rate`, `attention_dropout_rate`,
            `drop_path_rate`, `position_embedding`, `include_preprocessing`,
            `gelu_approximate`, `layer_norm_epsilon`.

    Returns:
        A `keras.Model`.

    Example:

    >>> model = keras_vit.{constructor}(weights=None, classes=10)
    >>> model.output_shape
    (None, 10)
    """


_HYBRID_DOC = """ of the feature map of a
    ResNet stem with stages {resnet} (section 3.1: a hybrid; total stride
    {stride})"""

CONSTRUCTORS = {}
for _variant in (*VARIANTS, *HYBRID_VARIANTS):
    CONSTRUCTORS[_variant] = globals()[constructor_name(_variant)] = _make_constructor(_variant)
del _variant


def forward_intermediates(model, images, training=False):
    """Runs a ViT built by `keras_vit` and returns what happens inside.

    The model's own layers are called one after another (no second model is
    built, and no weights are copied), and each Transformer block is asked
    for its attention probabilities.

    Args:
        model: a model built by `keras_vit.ViT` or a named constructor.
        images: array of shape `(batch, height, width, channels)` of the
            model's input size, pixels as the model expects them.
        training: bool, run dropout layers in training mode.

    Returns:
        A dict with `"tokens"`: a list with the `(batch, tokens, D)` output of
        every block; `"attention"`: a list with the `(batch, heads, tokens,
        tokens)` attention probabilities of every block; `"encoded"`: the
        tokens after the final norm.

    Example:

    >>> model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3))
    >>> out = keras_vit.forward_intermediates(model, np.zeros((1, 32, 32, 3)))
    >>> tuple(out["attention"][0].shape)
    (1, 2, 17, 17)
    """
    tokens, attention = [], []
    x = images
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, vit_layers.TransformerBlock):
            x, scores = layer(x, training=training, return_attention_scores=True)
            tokens.append(x)
            attention.append(scores)
            continue
        x = layer(x, training=training)
        if layer.name == "encoder_norm":
            return {"tokens": tokens, "attention": attention, "encoded": x}
    raise ValueError(
        "forward_intermediates needs a model built by keras_vit (a chain of layers ending in "
        f"'encoder_norm'). Received: model={model.name!r}"
    )
