"""`tf.data` input pipelines for training and evaluating ViTs.

Sources: a `tensorflow-datasets` name (`cifar10`, `oxford_iiit_pet`,
`imagenet2012` with a manual dir, ...), a folder of images with one
sub-folder per class, and Fashion-MNIST read from its original idx files
(Debian's `dataset-fashion-mnist` package puts them in
`/usr/share/datasets/fashion-mnist`).

Train-time augmentation follows the paper (Dosovitskiy et al., ICLR 2021,
https://arxiv.org/abs/2010.11929, appendix B): an Inception crop covering
5%-100% of the image and a random horizontal flip, plus optional RandAugment,
MixUp and CutMix from Keras core and random erasing (`keras_vit.erasing`).
Evaluation resizes the whole image (no crop). Images leave the pipeline as
float32 RGB pixels in [0, 255], which is what `keras_vit` models take
(`include_preprocessing=True`).

Randomness is stateless and derived from one seed, so two pipelines built
with the same seed yield the same batches.
"""

import gzip
import os

import numpy as np
import tensorflow as tf

from keras_vit import erasing as erasing_lib

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
LABEL_MODES = ("int", "one_hot")


def read_idx(path):
    """Reads an idx file (the MNIST format), gzipped or not, into a numpy array.

    Args:
        path: path of a `*-idx{1,3}-ubyte` file, optionally ending in `.gz`.

    Returns:
        A uint8 array whose shape is the one stored in the header.

    Example:

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "x-idx1-ubyte")
    >>> _ = open(path, "wb").write(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
    >>> read_idx(path).tolist()
    [7, 9]
    """
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(
            "Not an unsigned-byte idx file: the header must start with bytes 0, 0, 8. "
            f"Received: path={str(path)!r} starting with {list(data[:4])}"
        )
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(
            f"The idx file is truncated or padded: its header {dims} needs {expected} bytes. "
            f"Received: path={str(path)!r} with {len(data)} bytes"
        )
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _find_idx(data_dir, stem):
    for name in (stem + ".gz", stem, stem.replace("-idx", ".idx")):
        path = os.path.join(data_dir, name)
        if os.path.exists(path):
            return path
    return None


def load_fashion_mnist(split="train", data_dir=None):
    """Loads Fashion-MNIST as numpy arrays from its original idx files.

    Reads `data_dir` when given (an error if the files are not there);
    otherwise `$FASHION_MNIST_DIR`, then `/usr/share/datasets/fashion-mnist`
    (Debian's `dataset-fashion-mnist`), and when neither holds the files,
    `keras.datasets.fashion_mnist`, which downloads them.

    Args:
        split: `"train"` (60,000 images) or `"test"` (10,000).
        data_dir: optional folder holding the four `*-ubyte(.gz)` files.

    Returns:
        `(images, labels)`: uint8 `(N, 28, 28, 1)` and int64 `(N,)`.
        Class names are `FASHION_MNIST_CLASSES`.
    """
    if split not in _FASHION_MNIST_FILES:
        raise ValueError(f"`split` must be 'train' or 'test'. Received: split={split!r}")
    # An explicit data_dir must hold the files: silently reading another copy would hide a typo.
    candidates = [data_dir] if data_dir else [d for d in (os.environ.get("FASHION_MNIST_DIR"), FASHION_MNIST_DIR) if d]
    image_stem, label_stem = _FASHION_MNIST_FILES[split]
    for directory in candidates:
        image_path, label_path = _find_idx(directory, image_stem), _find_idx(directory, label_stem)
        if image_path and label_path:
            images, labels = read_idx(image_path), read_idx(label_path)
            break
    else:
        if data_dir is not None:
            raise FileNotFoundError(
                f"Fashion-MNIST files {image_stem}(.gz) and {label_stem}(.gz) not found. "
                f"Received: data_dir={data_dir!r}"
            )
        import keras

        train, test = keras.datasets.fashion_mnist.load_data()
        images, labels = train if split == "train" else test
    if images.ndim != 3 or len(images) != len(labels):
        raise ValueError(
            "Fashion-MNIST images must be (N, 28, 28) with one label each. "
            f"Received: images {images.shape}, labels {labels.shape}"
        )
    return images[..., None], labels.astype("int64")


def image_folder(directory, class_names=None):
    """Lists a folder of images with one sub-folder per class.

    Args:
        directory: root folder; each sub-folder name is a class.
        class_names: optional list fixing the class order (and so the label
            indices); defaults to the sorted sub-folder names.

    Returns:
        `(dataset, class_names)`: an unbatched `tf.data.Dataset` of
        `{"image": uint8 (H, W, C), "label": int64}` in a fixed (sorted)
        order, and the class names.
    """
    if not os.path.isdir(directory):
        raise ValueError(f"`directory` must be an existing folder. Received: directory={directory!r}")
    found = sorted(d for d in os.listdir(directory) if os.path.isdir(os.path.join(directory, d)))
    class_names = list(class_names or found)
    missing = sorted(set(class_names) - set(found))
    if missing or not class_names:
        raise ValueError(
            f"Expected one sub-folder per class in {directory!r}: missing {missing}. "
            f"Received: sub-folders {found}"
        )
    paths, labels = [], []
    for index, name in enumerate(class_names):
        for root, _, files in sorted(os.walk(os.path.join(directory, name))):
            for file in sorted(files):
                if file.lower().endswith(IMAGE_EXTENSIONS):
                    paths.append(os.path.join(root, file))
                    labels.append(index)
    if not paths:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) under {directory!r}.")

    def decode(path, label):
        # Decoding to RGB gives every image (gray, RGB, RGBA, palette) the same shape.
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return {"image": image, "label": label}

    dataset = tf.data.Dataset.from_tensor_slices((paths, np.asarray(labels, "int64")))
    return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE), class_names


def tfds_dataset(name, split, data_dir=None, manual_dir=None):
    """Loads a `tensorflow-datasets` dataset by name (imported lazily).

    Returns:
        `(dataset, class_names)` with elements `{"image", "label"}`.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            f"Loading dataset {name!r} needs `tensorflow-datasets`: pip install tensorflow-datasets"
        ) from error
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    dataset, info = tfds.load(
        name, split=split, data_dir=data_dir, with_info=True, download_and_prepare_kwargs=(
            {"download_config": config} if config else None
        ),
    )
    label = info.features["label"]
    class_names = list(getattr(label, "names", None) or range(label.num_classes))
    return dataset.map(lambda e: {"image": e["image"], "label": e["label"]}), class_names


def load(source, split="train", data_dir=None, manual_dir=None):
    """Resolves a dataset source to `(dataset, class_names)`.

    Args:
        source: `"fashion_mnist"` (the local idx files, or a download), an
            existing folder of images, or any other `tensorflow-datasets` name
            such as `"cifar10"` (then `split` is a TFDS split string).
        split: `"train"`, `"test"`, or a TFDS split. For image folders,
            `data_dir` is ignored and `source/split` is used when it exists.
        data_dir: folder of the Fashion-MNIST files or TFDS data.
        manual_dir: TFDS manual-download folder (e.g. for `imagenet2012`).

    Returns:
        An unbatched dataset of `{"image": uint8 (H, W, C), "label": int64}`
        and the list of class names.
    """
    if source == "fashion_mnist":
        images, labels = load_fashion_mnist(split, data_dir)
        dataset = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels})
        return dataset, list(FASHION_MNIST_CLASSES)
    if os.path.isdir(source):
        split_dir = os.path.join(source, split)
        return image_folder(split_dir if os.path.isdir(split_dir) else source)
    return tfds_dataset(source, split, data_dir=data_dir, manual_dir=manual_dir)


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
    if training:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if not per_image:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    if training:
        # One stateless seed per element (image or batch), different every epoch but fixed by `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
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
