"""Masked patch prediction: the paper's self-supervised pre-training.

"An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021,
https://arxiv.org/abs/2010.11929), section 4.6 and appendix B.1.2: 50% of
the patch embeddings are corrupted (80% of those replaced by a learned
[mask] embedding, 10% by a random other patch embedding, 10% kept as they
are), and the encoder predicts the 3-bit mean colour of every corrupted
patch (512 classes) from its final representation.

Here:

- `PatchCorruption` corrupts the patch embeddings (after the patch
  projection, before the class token and position embeddings are added), so
  a patch replaced by another one still carries its own position. The
  "random other patch embedding" is drawn uniformly from all other patches
  of the batch (any image, any position), the way BERT draws a random token
  from its whole vocabulary; it is that patch's embedding before corruption.
- `mean_colour_target` is the label: per channel, the mean over the patch of
  the pixel value in [0, 1], quantised to `bits` bits (level
  `min(floor(mean * 2**bits), 2**bits - 1)`, 8 equal bins for 3 bits), the
  three levels combined as `r * 64 + g * 8 + b`: 512 classes. On grayscale
  images repeated to RGB (Fashion-MNIST) the channels are equal, so only the
  8 classes with r = g = b occur (0, 73, 146, ..., 511). `target="grey"`
  predicts those 8 grey levels directly (the level of the mean over pixels
  and channels): for grey images class `73 * g` of the colour target is
  grey class `g`.
- `mpp_model(vit)` builds the pre-training model from a keras_vit ViT's own
  layers (shared, not copied) plus the corruption layer and a Dense head on
  every patch token. Its loss is the cross-entropy on the corrupted patches
  only. After pre-training, fine-tune the same ViT (or its saved weights)
  as usual: its classification head was not used, so it starts fresh.
"""

import keras
from keras import ops

from keras_vit import layers as vit_layers

TARGETS = ("colour", "grey")


@keras.saving.register_keras_serializable(package=vit_layers.PACKAGE)
class PatchCorruption(keras.layers.Layer):
    """Corrupts a random share of patch embeddings, in training only.

    In each image, `round(mask_ratio * num_patches)` patches are chosen
    uniformly at random. Each chosen patch is, independently, replaced by the
    learned mask token with probability `mask_fraction`, by the embedding of
    a random other patch of the batch (uniform over the other
    `batch * num_patches - 1` patches, their embeddings before corruption)
    with probability `random_fraction`, and left unchanged otherwise. At
    inference (`training=False`) the tokens pass through and nothing is
    chosen.

    Args:
        mask_ratio: float in [0, 1], the share of patches chosen per image.
            Defaults to `0.5`.
        mask_fraction: float, probability that a chosen patch becomes the
            mask token. Defaults to `0.8`.
        random_fraction: float, probability that a chosen patch becomes a
            random other patch; `1 - mask_fraction - random_fraction` is left
            unchanged. Defaults to `0.1`.
        initializer: initializer of the `(D,)` mask token. Defaults to
            normal(stddev=0.02).
        seed: optional int, seed of the random choices.

    Call arguments:
        inputs: patch embeddings of shape `(batch, num_patches, D)`.
        training: Python bool, whether to corrupt.

    Returns:
        A tuple `(tokens, chosen)`: the corrupted `(batch, num_patches, D)`
        tokens and the boolean `(batch, num_patches)` mask of the chosen
        (corrupted) patches, the ones the loss is computed on.

    Example:

    >>> layer = PatchCorruption(seed=0)
    >>> tokens, chosen = layer(np.ones((2, 16, 8)), training=True)
    >>> tuple(tokens.shape), np.asarray(chosen).sum(axis=1).tolist()
    ((2, 16, 8), [8, 8])
    """

    def __init__(self, mask_ratio=0.5, mask_fraction=0.8, random_fraction=0.1, initializer=None, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"`mask_ratio` must be in [0, 1]. Received: mask_ratio={mask_ratio}")
        if min(mask_fraction, random_fraction) < 0 or mask_fraction + random_fraction > 1:
            raise ValueError(
                "`mask_fraction` and `random_fraction` must be non-negative with a sum of at most 1. "
                f"Received: mask_fraction={mask_fraction}, random_fraction={random_fraction}"
            )
        self.mask_ratio = mask_ratio
        self.mask_fraction = mask_fraction
        self.random_fraction = random_fraction
        self.initializer = keras.initializers.get(initializer or keras.initializers.RandomNormal(stddev=0.02))
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[-1] is None:
            raise ValueError(
                "PatchCorruption expects patch embeddings of shape (batch, num_patches, D). "
                f"Received: input_shape={tuple(input_shape)}"
            )
        self.mask_token = self.add_weight(name="mask_token", shape=(input_shape[-1],), initializer=self.initializer)

    def call(self, inputs, training=False):
        batch, num_patches = ops.shape(inputs)[0], ops.shape(inputs)[1]
        if not training or self.mask_ratio == 0:
            return inputs, ops.zeros((batch, num_patches), "bool")
        width = inputs.shape[-1]
        num_chosen = ops.cast(ops.round(self.mask_ratio * ops.cast(num_patches, "float32")), "int32")
        # Exactly num_chosen per image: the patches whose random score ranks lowest.
        scores = keras.random.uniform((batch, num_patches), seed=self.seed_generator)
        ranks = ops.argsort(ops.argsort(scores, axis=1), axis=1)
        chosen = ranks < num_chosen
        kind = keras.random.uniform((batch, num_patches), seed=self.seed_generator)
        to_mask = chosen & (kind < self.mask_fraction)
        to_random = chosen & (kind >= self.mask_fraction) & (kind < self.mask_fraction + self.random_fraction)

        # Another patch of the batch for every position: uniform over the
        # total - 1 others (a draw in [0, total - 2], shifted past itself).
        total = batch * num_patches
        flat = ops.reshape(inputs, (total, width))
        position = ops.arange(total, dtype="int32")
        draw = keras.random.uniform((total,), seed=self.seed_generator)
        other = ops.cast(ops.floor(draw * ops.cast(total - 1, "float32")), "int32")
        other = ops.where(other >= position, other + 1, other)
        other = ops.minimum(other, total - 1)  # A batch of one patch has no other.
        random_tokens = ops.reshape(ops.take(flat, other, axis=0), ops.shape(inputs))

        mask_token = ops.cast(self.mask_token, inputs.dtype)[None, None, :]
        tokens = ops.where(to_random[..., None], random_tokens, inputs)
        tokens = ops.where(to_mask[..., None], mask_token, tokens)
        return tokens, chosen

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), tuple(input_shape[:2])

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "mask_ratio": self.mask_ratio,
                "mask_fraction": self.mask_fraction,
                "random_fraction": self.random_fraction,
                "initializer": keras.initializers.serialize(self.initializer),
                "seed": self.seed,
            }
        )
        return config


def num_target_classes(target="colour", bits=3):
    """The number of classes of a target: `2 ** (3 * bits)` for `"colour"`, `2 ** bits` for `"grey"`."""
    if target not in TARGETS:
        raise ValueError(f"`target` must be one of {TARGETS}. Received: target={target!r}")
    return 2 ** (3 * bits) if target == "colour" else 2**bits


def mean_colour_target(images, patch_size, target="colour", bits=3, value_range=(0.0, 255.0)):
    """The class of each patch's quantised mean colour: the label of masked patch prediction.

    Pixels are mapped from `value_range` to [0, 1] and averaged over each
    patch; the mean `m` is quantised to the level `min(floor(m * 2**bits),
    2**bits - 1)` (3 bits: 8 equal bins). `"colour"`: one level per channel
    of an RGB image, class `(r << 2 * bits) + (g << bits) + b` (3 bits: 512
    classes, the paper's). `"grey"`: the level of the mean over the patch's
    pixels and channels (3 bits: 8 classes); on grey images (r = g = b) the
    colour class is `73 * grey` for 3 bits.

    Args:
        images: `(batch, height, width, channels)` pixels in `value_range`;
            3 channels for `"colour"`, any number for `"grey"`.
        patch_size: int, side of a square patch; divides height and width.
        target: `"colour"` or `"grey"`. Defaults to `"colour"`.
        bits: int, bits per channel. Defaults to `3`.
        value_range: `(low, high)` of the pixels. Defaults to `(0, 255)`.

    Returns:
        int32 tensor `(batch, num_patches)`, patches in the row-major order of
        `PatchEncoder`.

    Example:

    >>> images = np.zeros((1, 4, 8, 3), "float32")
    >>> images[:, :, 4:] = (255, 128, 0)  # right patch: red 1.0, green 0.5, blue 0
    >>> np.asarray(mean_colour_target(images, 4)).tolist()
    [[0, 480]]
    """
    num_target_classes(target, bits)
    height, width, channels = images.shape[1:]
    if height % patch_size or width % patch_size:
        raise ValueError(
            f"The image height and width must be multiples of the patch size {patch_size}. "
            f"Received: images of shape {tuple(images.shape)}"
        )
    if target == "colour" and channels != 3:
        raise ValueError(f"The colour target needs RGB images. Received: images of shape {tuple(images.shape)}")
    low, high = value_range
    x = (ops.cast(images, "float32") - low) / (high - low)
    gh, gw = height // patch_size, width // patch_size
    x = ops.reshape(x, (-1, gh, patch_size, gw, patch_size, channels))
    means = ops.reshape(ops.mean(x, axis=(2, 4)), (-1, gh * gw, channels))
    if target == "grey":
        means = ops.mean(means, axis=-1, keepdims=True)
    levels = 2**bits
    quantised = ops.cast(ops.clip(ops.floor(means * levels), 0, levels - 1), "int32")
    if target == "grey":
        return quantised[..., 0]
    return quantised[..., 0] * levels * levels + quantised[..., 1] * levels + quantised[..., 2]


def masked_patch_loss(targets, logits, chosen):
    """Mean cross-entropy over the chosen patches only.

    Args:
        targets: int `(batch, num_patches)` classes.
        logits: `(batch, num_patches, classes)` head outputs (no softmax).
        chosen: bool `(batch, num_patches)`; other patches do not count.

    Returns:
        A float32 scalar: the cross-entropy summed over the chosen patches,
        divided by their number (0 when none is chosen).

    Example:

    >>> logits = np.log(np.array([[[0.5, 0.5], [0.9, 0.1]]], "float32"))
    >>> round(float(masked_patch_loss(np.array([[0, 1]]), logits, np.array([[True, False]]))), 4)
    0.6931
    """
    per_patch = keras.losses.sparse_categorical_crossentropy(targets, ops.cast(logits, "float32"), from_logits=True)
    weights = ops.cast(chosen, "float32")
    return ops.sum(per_patch * weights) / ops.maximum(ops.sum(weights), 1.0)


class MaskedPatchPrediction(keras.Model):
    """The masked patch prediction model around a keras_vit ViT's layers.

    Build it with `mpp_model`. `fit` takes images only (`mpp.fit(images)` or
    a dataset of image batches): the targets come from the images and the
    loss is `masked_patch_loss` on the patches the corruption chose; the
    `masked_accuracy` metric scores the same patches. At inference nothing is
    corrupted, so `evaluate` reports no loss: pre-training is judged by
    fine-tuning the ViT. The wrapper is for training; save the ViT.
    """

    def __init__(self, stem, corruption, encoder, head, patch_size, num_prefix_tokens, target, bits, value_range,
                 **kwargs):
        super().__init__(**kwargs)
        self.stem = stem
        self.corruption = corruption
        self.encoder = encoder
        self.head = head
        self.patch_size = patch_size
        self.num_prefix_tokens = num_prefix_tokens
        self.target = target
        self.bits = bits
        self.value_range = tuple(value_range)
        self.masked_accuracy = keras.metrics.SparseCategoricalAccuracy(name="masked_accuracy")

    def call(self, images, training=False):
        x = images
        for layer in self.stem:
            x = layer(x, training=training)
        x, chosen = self.corruption(x, training=training)
        for layer in self.encoder:
            x = layer(x, training=training)
        return {"logits": self.head(x[:, self.num_prefix_tokens :]), "chosen": chosen}

    def targets(self, images):
        """The `mean_colour_target` classes of `images`, `(batch, num_patches)`."""
        return mean_colour_target(images, self.patch_size, self.target, self.bits, self.value_range)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = masked_patch_loss(self.targets(x), y_pred["logits"], y_pred["chosen"])
        if self.losses:
            loss = loss + ops.sum([ops.cast(extra, "float32") for extra in self.losses])
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        self.masked_accuracy.update_state(
            self.targets(x), ops.cast(y_pred["logits"], "float32"), sample_weight=ops.cast(y_pred["chosen"], "float32")
        )
        return self.get_metrics_result()


def mpp_model(vit, target="colour", bits=3, mask_ratio=0.5, mask_fraction=0.8, random_fraction=0.1, seed=None,
              value_range=None):
    """Builds the masked patch prediction model of a keras_vit ViT, sharing its layers.

    The ViT's own layers (no copy) run in order: pixel rescaling when the
    model has it, the patch embedding (`embedding`), then a `PatchCorruption`,
    then the class token, position embeddings, dropout, blocks and
    `encoder_norm`; a Dense head (`mpp_head`, zero-initialised) predicts the
    target class of every patch token. Training the returned model trains the
    ViT; its pooling and classification head are left out and untouched.

    Args:
        vit: a model built by `keras_vit.ViT` or a named constructor, with or
            without its top.
        target: `"colour"` (the paper's 3-bit mean colour, 512 classes) or
            `"grey"` (3-bit mean grey level, 8 classes: what grey images such
            as Fashion-MNIST can tell apart). Defaults to `"colour"`.
        bits: int, quantisation bits per channel. Defaults to `3`.
        mask_ratio, mask_fraction, random_fraction: the corruption (see
            `PatchCorruption`). Default to the paper's 0.5, 0.8, 0.1.
        seed: optional int, seed of the corruption.
        value_range: `(low, high)` of the pixels the ViT takes. Defaults to
            `(0, 255)` when the ViT rescales its inputs
            (`include_preprocessing=True`), else `(-1, 1)`.

    Returns:
        A built `MaskedPatchPrediction` model, not compiled.

    Example:

    >>> vit = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=10)
    >>> mpp = keras_vit.mpp.mpp_model(vit, seed=0)
    >>> mpp.compile(optimizer="adam")
    >>> history = mpp.fit(np.zeros((4, 32, 32, 3)), epochs=1, verbose=0)
    >>> tuple(mpp(np.zeros((1, 32, 32, 3)))["logits"].shape)
    (1, 16, 512)
    """
    layers = [layer for layer in vit.layers if not isinstance(layer, keras.layers.InputLayer)]
    names = [layer.name for layer in layers]
    if "embedding" not in names or "encoder_norm" not in names:
        raise ValueError(
            "mpp_model needs a ViT built by keras_vit (layers 'embedding' ... 'encoder_norm'). "
            f"Received: model={vit.name!r} with layers {names}"
        )
    split, end = names.index("embedding") + 1, names.index("encoder_norm") + 1
    embedding = layers[split - 1]
    patch_size = embedding.patch_size
    if not isinstance(patch_size, int):
        raise ValueError(f"mpp_model needs square patches. Received: patch_size={patch_size}")
    if value_range is None:
        value_range = (0.0, 255.0) if "rescaling" in names[:split] else (-1.0, 1.0)
    model = MaskedPatchPrediction(
        stem=layers[:split],
        corruption=PatchCorruption(mask_ratio, mask_fraction, random_fraction, seed=seed, name="patch_corruption"),
        encoder=layers[split:end],
        head=keras.layers.Dense(num_target_classes(target, bits), kernel_initializer="zeros", name="mpp_head"),
        patch_size=patch_size,
        num_prefix_tokens=1 if "class_token" in names else 0,
        target=target,
        bits=bits,
        value_range=value_range,
        name=f"{vit.name}_mpp",
    )
    model(ops.zeros((1,) + tuple(vit.input_shape[1:])))
    return model
