"""`tf.data` input pipelines for training and evaluating ViTs.

The sources (a `tensorflow-datasets` name, a folder of images, Fashion-MNIST's
original idx files) live in `keras_vit.sources` and are re-exported here.

Train-time augmentation follows the paper (Dosovitskiy et al., ICLR 2021,
https://arxiv.org/abs/2010.11929, appendix B): an Inception crop covering
5%-100% of the image and a random horizontal flip, plus optional RandAugment,
MixUp and CutMix from Keras core and random erasing (`keras_vit.erasing`).
Evaluation resizes the whole image (no crop). Images leave the pipeline as
float32 RGB pixels in [0, 255], which is what `keras_vit` models take
(`include_preprocessing=True`).

Randomness is stateless and derived from one seed, so two pipelines built
with the same seed yield the same batches. Training runs number their passes
over the data (`pipeline(..., epoch=k)`, chained by `passes`): pass k's order
and augmentation depend on the seed and k alone, so a run resumed from a
backup sees the batches it would have seen had it never stopped.
"""

import numpy as np
import tensorflow as tf

from keras_vit import erasing as erasing_lib
from keras_vit.sources import (  # re-exported: keras_vit.data is the public module
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    IMAGE_EXTENSIONS,
    image_folder,
    load,
    load_fashion_mnist,
    read_idx,
    tfds_dataset,
)

LABEL_MODES = ("int", "one_hot")


def inception_crop(image, size, seed, area_range=(0.05, 1.0), aspect_ratio_range=(3 / 4, 4 / 3)):
    """Crops a random box covering `area_range` of the image and resizes it.

    The "Inception" crop of the paper's training recipe; stateless, so the
    same `seed` gives the same crop.

    Args:
        image: `(H, W, C)` tensor.
        size: `(height, width)` of the output.
        seed: shape-`(2,)` int tensor, the stateless seed.
        area_range: fraction of the image area the crop covers. Defaults to
            `(0.05, 1.0)`.
        aspect_ratio_range: width/height of the crop. Defaults to
            `(3/4, 4/3)`.

    Returns:
        float32 `(height, width, C)` tensor, same value range as `image`.

    Example:

    >>> crop = inception_crop(np.zeros((28, 28, 1), "uint8"), (32, 32), seed=[1, 2])
    >>> tuple(crop.shape)
    (32, 32, 1)
    """
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros((1, 0, 4)),
        seed=seed,
        area_range=area_range,
        aspect_ratio_range=aspect_ratio_range,
        min_object_covered=0.0,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, box_size)
    return tf.image.resize(tf.cast(crop, tf.float32), size, method="bilinear")


def _to_channels(image, channels):
    have = image.shape[-1]
    if have == channels:
        return image
    if have == 1 and channels == 3:
        return tf.image.grayscale_to_rgb(image)
    if have == 3 and channels == 1:
        return tf.image.rgb_to_grayscale(image)
    if have == 4:
        return _to_channels(image[..., :3], channels)
    raise ValueError(f"Cannot turn {have}-channel images into {channels} channels.")


def pipeline(
    dataset,
    image_size,
    batch_size,
    num_classes,
    training=False,
    channels=3,
    seed=0,
    area_range=(0.05, 1.0),
    flip=True,
    translate=0,
    erasing=0.0,
    randaugment=False,
    mixup=0.0,
    cutmix=0.0,
    label_mode="int",
    shuffle_buffer=10_000,
    cache=False,
    drop_remainder=None,
    input_context=None,
    epoch=None,
):
    """Turns an unbatched `{"image", "label"}` dataset into model-ready batches.

    Args:
        dataset: unbatched `tf.data.Dataset` of `{"image": (H, W, C),
            "label": int}`, e.g. from `load()`.
        image_size: int or `(height, width)`, the model's input size.
        batch_size: int, batch size of this pipeline (per input pipeline
            under a distribution strategy: see `input_context`).
        num_classes: int, used for one-hot labels.
        training: bool. `True`: shuffle, Inception crop, flip and the
            optional augmentations; `False`: resize the whole image.
        channels: 3 (grayscale is repeated to RGB) or 1. Defaults to `3`.
        seed: int, the seed every random choice derives from. Defaults to `0`.
        area_range: Inception crop area fraction; `None` resizes the whole
            image instead. Defaults to `(0.05, 1.0)`.
        flip: bool, random horizontal flips when training.
        translate: int, random shifts of up to this many pixels each way
            when training and not cropping (zero padding, then a random
            crop back to `image_size`). Defaults to `0`.
        erasing: float, the probability of random erasing when training
            (`keras_vit.erasing`: one rectangle of 2%-33% of the image filled
            with noise); `0` disables it. Defaults to `0`.
        randaugment: bool, Keras' `RandAugment` (2 ops, factor 0.5).
        mixup: float, MixUp alpha; `0` disables it. Needs one-hot labels.
        cutmix: float, CutMix alpha; `0` disables it.
        label_mode: `"int"` or `"one_hot"` (forced by MixUp/CutMix).
        shuffle_buffer: int, shuffle buffer size when training.
        cache: bool, cache the source images in memory (worth it for small
            datasets such as Fashion-MNIST; not for ImageNet). Defaults to
            `False`.
        drop_remainder: bool; defaults to `training`.
        input_context: optional `tf.distribute.InputContext`; the dataset is
            then sharded by input pipeline.
        epoch: `None`, or the number of the pass over the data this dataset
            is (an int, or an int64 scalar tensor as `passes` gives). `None`:
            the order and augmentation change at each iteration of the
            dataset, in a sequence that starts anew in each process. A
            number: they are fixed by `(seed, epoch)` alone, so a resumed run
            gets the same pass `epoch` as one that never stopped. Keras'
            `RandAugment`, `MixUp` and `CutMix` layers draw from their own
            seed state either way.

    Returns:
        A `tf.data.Dataset` of `(images, labels)`: float32
        `(batch, height, width, channels)` in [0, 255] and int64 `(batch,)`
        or float32 `(batch, num_classes)` labels.

    Example:

    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     {"image": np.zeros((4, 28, 28, 1), "uint8"), "label": np.arange(4)})
    >>> images, labels = next(iter(pipeline(ds, 32, 2, 10, training=True)))
    >>> tuple(images.shape), tuple(labels.shape)
    ((2, 32, 32, 3), (2,))
    """
    if label_mode not in LABEL_MODES:
        raise ValueError(f"`label_mode` must be one of {LABEL_MODES}. Received: label_mode={label_mode!r}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    mixing = training and (mixup > 0 or cutmix > 0)
    one_hot = label_mode == "one_hot" or mixing
    drop_remainder = training if drop_remainder is None else drop_remainder

    if input_context is not None and input_context.num_input_pipelines > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if cache:
        dataset = dataset.cache()
    # Crops and shifts differ per image; the rest (cast, resize, flip) runs on whole batches,
    # which saves tf.data's per-element work (3.4 of every 110 CPU-seconds of a Fashion-MNIST epoch;
    # benchmarks/pipeline.py).
    per_image = (training and (area_range is not None or translate or erasing)
                 or not dataset.element_spec["image"].shape.is_fully_defined())  # sizes differ: resize first
    if training and epoch is None:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        # One stateless seed per element (image or batch), different every epoch but fixed by `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
    elif training:
        def draw(shape, pair):  # full-range int64s, a function of the pair alone
            return tf.random.stateless_uniform(shape, tf.stack(pair), minval=None, maxval=None, dtype=tf.int64)

        key = draw([2], [tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
        dataset = _shuffled(dataset, shuffle_buffer, key)
        seeds = tf.data.Dataset.counter().map(lambda i: draw([4], [key[1], i]))
    if not per_image:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if training:
        dataset = tf.data.Dataset.zip(dataset, seeds)
    else:
        dataset = dataset.map(lambda element: (element, tf.zeros((4,), tf.int64)))

    def prepare(element, element_seed):
        image = element["image"]
        in_channels = image.shape[-1]
        if in_channels is None:
            raise ValueError(f"The images' channel count must be known. Received: image spec {image.shape}")
        if training and area_range is not None:
            image = inception_crop(image, size, element_seed[:2], area_range=area_range)
        else:
            image = tf.cast(image, tf.float32)
            if tuple(image.shape[-3:-1]) != size:  # already the right size (Fashion-MNIST at 28): no resampling
                image = tf.image.resize(image, size, method="bilinear")
            if training and translate:
                padded = tf.pad(image, [[translate, translate], [translate, translate], [0, 0]])
                image = tf.image.stateless_random_crop(padded, size + (in_channels,), element_seed[:2])
        if training and flip:
            # Each image of a batch is flipped or not on its own.
            image = tf.image.stateless_random_flip_left_right(image, element_seed[2:])
        if training and erasing:
            erase_seed = tf.random.experimental.stateless_fold_in(element_seed[:2], 1)
            image = erasing_lib.random_erasing(image, erase_seed, probability=erasing)
        image = tf.ensure_shape(image, image.shape[:-3] + size + (in_channels,))
        image = _to_channels(tf.clip_by_value(image, 0.0, 255.0), channels)
        label = element["label"]
        if one_hot:
            label = tf.one_hot(label, num_classes, dtype=tf.float32)
        return image, label

    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    if per_image:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if training and (randaugment or mixing):
        dataset = dataset.map(
            _batch_augmenter(randaugment, mixup, cutmix, seed), num_parallel_calls=tf.data.AUTOTUNE
        )
    options = tf.data.Options()
    options.deterministic = True
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _shuffled(dataset, buffer_size, key):
    """`dataset.shuffle(buffer_size)` in the one order the int64 pair `key` fixes.

    `Dataset.shuffle` pairs its seed with the global seed, and with a global
    seed of 0 it cannot take a tensor (a pass number's) inside a `tf.data`
    function; the op under it takes both seeds.
    """
    spec = tf.nest.flatten(dataset.element_spec)
    variant = tf.raw_ops.ShuffleDatasetV3(
        input_dataset=tf.data.experimental.to_variant(dataset), buffer_size=tf.constant(buffer_size, tf.int64),
        seed=key[0], seed2=key[1], seed_generator=tf.raw_ops.DummySeedGenerator(),
        output_types=[s.dtype for s in spec], output_shapes=[s.shape for s in spec], reshuffle_each_iteration=False,
    )
    return tf.data.experimental.from_variant(variant, dataset.element_spec)


def passes(make_pass, batches_per_pass, start_batch=0):
    """An endless stream of training batches: pass 0 over the data, then pass 1, and so on, from `start_batch` on.

    `make_pass(k)` builds pass `k` (an int64 scalar tensor), e.g.
    `pipeline(..., training=True, epoch=k)`, which must yield
    `batches_per_pass` batches (`drop_remainder`). A run resumed after `n`
    batches goes on with exactly the batches it would have had:
    `passes(make_pass, b, n)` yields what `passes(make_pass, b)` yields after
    its first `n`. Give `model.fit` a `steps_per_epoch`; it then keeps one
    iterator across its epochs.

    Example:

    >>> source = tf.data.Dataset.from_tensor_slices(
    ...     {"image": np.zeros((4, 8, 8, 1), "uint8"), "label": np.arange(4)})
    >>> def make_pass(k):
    ...     return pipeline(source, 8, 2, 4, training=True, epoch=k, area_range=None)
    >>> whole = [y.tolist() for _, y in passes(make_pass, 2).take(5).as_numpy_iterator()]
    >>> resumed = [y.tolist() for _, y in passes(make_pass, 2, start_batch=3).take(2).as_numpy_iterator()]
    >>> resumed == whole[3:]
    True
    """
    if batches_per_pass < 1:
        raise ValueError(f"Each pass must yield at least one batch. Received: batches_per_pass={batches_per_pass}")
    first, offset = divmod(start_batch, batches_per_pass)
    stream = tf.data.Dataset.range(first, 2**62).flat_map(make_pass)
    return (stream.skip(offset) if offset else stream).prefetch(tf.data.AUTOTUNE)


def count(dataset):
    """The number of elements of a finite dataset: its cardinality where known, else one pass over it."""
    n = dataset.cardinality().numpy()
    return int(n) if n >= 0 else int(dataset.reduce(0, lambda c, _: c + 1).numpy())


def eval_arrays(dataset, image_size, channels=3, batch_size=1000):
    """The images of an unbatched `{"image", "label"}` dataset as evaluation feeds
    them to a model (`pipeline(..., training=False)`: resized whole, bilinear,
    to `image_size`, grayscale repeated to `channels`), gathered into numpy.

    For scoring a model or a TFLite file on exactly the inputs `model.evaluate`
    on the pipeline would give it, e.g. Fashion-MNIST's 28x28 test images for a
    model trained at 56x56.

    Returns:
        `(images, labels)`: float32 `(N, height, width, channels)` in [0, 255]
        and int64 `(N,)`.

    Example:

    >>> source = tf.data.Dataset.from_tensor_slices(
    ...     {"image": np.zeros((3, 28, 28, 1), "uint8"), "label": np.arange(3)})
    >>> images, labels = eval_arrays(source, 56)
    >>> images.shape, labels.tolist()
    ((3, 56, 56, 3), [0, 1, 2])
    """
    batches = list(pipeline(dataset, image_size, batch_size, num_classes=0, channels=channels).as_numpy_iterator())
    if not batches:
        raise ValueError("The dataset holds no images.")
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def _batch_augmenter(randaugment, mixup, cutmix, seed):
    """Keras core augmentation layers applied to whole batches inside tf.data."""
    import keras

    layers = []
    if randaugment:
        layers.append(keras.layers.RandAugment(value_range=(0, 255), seed=seed))
    if mixup > 0:
        layers.append(keras.layers.MixUp(alpha=mixup, seed=seed + 1))
    if cutmix > 0:
        layers.append(keras.layers.CutMix(factor=cutmix, seed=seed + 2))

    def augment(images, labels):
        data = {"images": images, "labels": labels}
        for layer in layers:
            if isinstance(layer, keras.layers.RandAugment):
                data["images"] = layer(data["images"], training=True)
            else:
                data = layer(data, training=True)
        return tf.clip_by_value(data["images"], 0.0, 255.0), data["labels"]

    return augment


def distributed(strategy, make_dataset, global_batch_size):
    """Builds a sharded, per-replica-batched dataset under `strategy`.

    Args:
        strategy: a `tf.distribute.Strategy`.
        make_dataset: function `(batch_size, input_context) -> tf.data.Dataset`,
            e.g. a `functools.partial` of `pipeline`.
        global_batch_size: int, the batch summed over all replicas.

    Returns:
        A distributed dataset for `model.fit`/`evaluate`.
    """
    if global_batch_size % strategy.num_replicas_in_sync:
        raise ValueError(
            f"The global batch size must be divisible by the {strategy.num_replicas_in_sync} "
            f"replicas. Received: global_batch_size={global_batch_size}"
        )

    def dataset_fn(context):
        return make_dataset(context.get_per_replica_batch_size(global_batch_size), context)

    return strategy.distribute_datasets_from_function(dataset_fn)
