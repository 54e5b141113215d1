"""Where training and evaluation images come from.

A `tensorflow-datasets` name (`cifar10`, `oxford_iiit_pet`, `imagenet2012`
with a manual dir, ...), a folder of images with one sub-folder per class,
and Fashion-MNIST read from its original idx files (Debian's
`dataset-fashion-mnist` package puts them in
`/usr/share/datasets/fashion-mnist`). Each source gives an unbatched
`tf.data.Dataset` of `{"image": uint8 (H, W, C), "label": int64}`;
`keras_vit.data.pipeline` turns it into training or evaluation batches.
`keras_vit.data` re-exports everything here.
"""

import gzip
import os

import numpy as np
import tensorflow as tf


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
