"""Exports a ViT for TF Serving: a versioned SavedModel with three signatures.

`export_saved_model(model, "models/vit")` writes `models/vit/1/`, which
`tensorflow/serving` loads as it is (`--model_base_path=/abs/models/vit`):

- `serving_default`: `images`, float32 `(batch, height, width, channels)` RGB
  pixels in [0, 255] at the model's size -> `probabilities` `(batch, classes)`.
- `serve_bytes`: `image_bytes`, a batch of encoded JPEG/PNG/GIF/BMP strings (the
  `_bytes` suffix lets TF Serving's REST API take `{"b64": ...}` values) ->
  `classes` (int64 ids), `labels` (class names), `scores` (probabilities), each
  `(batch, top_k)`, best first, and `error` `(batch,)`: empty for images that
  worked, the reason for the others. Images are decoded and resized as at
  evaluation (`keras_vit.images`); one bad image does not fail the request.
- `features`: `images` as for `serving_default` -> `features` `(batch, D)`, the
  pooled embedding the head sees, for retrieval.

The class names also travel as the asset `assets/labels.txt`. TFLite/LiteRT
export lives in `keras_vit.litert`.
"""

import os
import shutil
import tempfile
import uuid

import keras
import numpy as np
import tensorflow as tf

from keras_vit import atomic
from keras_vit import images as vit_images

SIGNATURES = ("serving_default", "serve_bytes", "features")
LABELS_SUFFIX = ".labels.txt"


def image_input_shape(model):
    """Returns `(height, width, channels)` of a one-image-input Keras model, or raises."""
    if not isinstance(model, keras.Model) or len(model.inputs) != 1:
        raise ValueError(
            "Export needs a `keras.Model` with one image input. Received: "
            f"{type(model).__name__} with {len(getattr(model, 'inputs', []) or [])} inputs"
        )
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape) or shape[-1] not in (1, 3):
        raise ValueError(
            "Export needs a fixed image input (height, width, 1 or 3 channels). "
            f"Received: input shape {tuple(model.inputs[0].shape)}"
        )
    return shape


def num_classes(model):
    """Returns the class count of a classifier, or raises if the model has no head."""
    shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    if shape is None or len(shape) != 2 or shape[-1] is None:
        raise ValueError(
            "Export needs a classifier whose output is (batch, classes), e.g. a model built "
            f"with include_top=True. Received: output shapes {[tuple(o.shape) for o in model.outputs]}"
        )
    return int(shape[-1])


def resolve_class_names(model, class_names=None):
    """The model's class names: `class_names`, ImageNet's for 1000 classes, else the ids.

    Example:

    >>> model = keras_vit.ViT(1, 8, 16, 1, 8, input_shape=(8, 8, 3), classes=2)
    >>> resolve_class_names(model), resolve_class_names(model, ["cat", "dog"])
    (['0', '1'], ['cat', 'dog'])
    """
    classes = num_classes(model)
    if class_names is None:
        if classes == 1000:
            from keras_vit.imagenet import class_index

            index = class_index()
            return [index[str(i)][1] for i in range(classes)]
        return [str(i) for i in range(classes)]
    names = [str(n) for n in class_names]
    if len(names) != classes:
        raise ValueError(
            f"`class_names` must have one name per class of the model ({classes}). "
            f"Received: {len(names)} names"
        )
    if any("\n" in n for n in names):
        raise ValueError("Class names cannot contain newlines (they are stored one per line).")
    return names


def labels_path(path):
    """The class-name file kept next to a model file: `<path>.labels.txt`."""
    return os.fspath(path) + LABELS_SUFFIX


def write_labels(path, class_names):
    """Writes `class_names`, one per line, to `<path>.labels.txt` (atomically); returns its path.

    Use it next to a saved `.keras` file so `keras-vit predict` prints the names.
    """
    return atomic.write_text(labels_path(path), "".join(f"{n}\n" for n in class_names))


def read_labels(path):
    """Reads `<path>.labels.txt` (or `path` itself if it is the labels file); `None` if absent."""
    path = os.fspath(path)
    target = path if path.endswith(LABELS_SUFFIX) else labels_path(path)
    if not os.path.isfile(target):
        return None
    with open(target, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def outputs_probabilities(model):
    """Whether the model's output already went through a softmax (else it gives logits)."""
    return getattr(model.layers[-1], "activation", None) is keras.activations.softmax


def feature_model(model):
    """A model sharing `model`'s layers that returns the pooled embedding the head sees."""
    for name in ("pre_logits", "pool"):
        try:
            return keras.Model(model.inputs, model.get_layer(name).output, name=f"{model.name}_features")
        except ValueError:
            continue
    return keras.Model(model.inputs, model.layers[-1].input, name=f"{model.name}_features")


class _ServingModule(tf.Module):
    """Holds the model's variables and the three signature functions."""

    def __init__(self, model, class_names, top_k, max_pixels, labels_file):
        super().__init__(name="keras_vit_serving")
        height, width, channels = image_input_shape(model)
        self._model = model
        self._features = feature_model(model)
        # Tracking the variables makes the functions' captures point at saved ones.
        self.model_variables = list(model.variables)
        self.labels_file = tf.saved_model.Asset(labels_file)
        softmax = not outputs_probabilities(model)
        size = (height, width)
        k = min(top_k, len(class_names))
        names = tf.constant(class_names)
        image_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="images")

        def probabilities(images):
            out = self._model(images, training=False)
            return tf.nn.softmax(out, axis=-1) if softmax else out

        @tf.function(input_signature=[image_spec])
        def serving_default(images):
            return {"probabilities": probabilities(images)}

        @tf.function(input_signature=[image_spec])
        def features(images):
            return {"features": self._features(images, training=False)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(image_bytes):
            return _classify_bytes(image_bytes, probabilities, names, k, size, channels, max_pixels)

        self.serving_default = serving_default
        self.features = features
        self.serve_bytes = serve_bytes


def _classify_bytes(image_bytes, probabilities, names, k, size, channels, max_pixels):
    """Decodes a batch of encoded images, classifies the good ones, reports the bad ones."""
    count = tf.shape(image_bytes, out_type=tf.int64)[0]
    blank = tf.zeros(size + (channels,), tf.float32)

    def prepare(index, data):
        status, height, width = vit_images.inspect_image(data, max_pixels)
        image = tf.cond(
            tf.equal(status, vit_images.OK),
            lambda: vit_images.decode_and_resize(data, size, channels),
            lambda: blank,
        )
        return index, status, height, width, image

    # A decoder error inside `map` drops only that element (`ignore_errors`);
    # its index is then missing and it is reported as corrupt. The sentinel
    # keeps the single batch non-empty when every image fails.
    decoded = (
        tf.data.Dataset.from_tensor_slices((tf.range(count), image_bytes))
        .map(prepare, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        .ignore_errors()
    )
    zero = tf.constant(0, tf.int64)
    sentinel = tf.data.Dataset.from_tensors((tf.constant(-1, tf.int64), zero, zero, zero, blank))
    index, status, height, width, pixels = decoded.concatenate(sentinel).batch(count + 1).get_single_element()
    index, status, height, width, pixels = (t[:-1] for t in (index, status, height, width, pixels))

    good = tf.equal(status, vit_images.OK)
    good_pixels = tf.boolean_mask(pixels, good)

    def classify():
        top = tf.math.top_k(probabilities(good_pixels), k=k)
        return top.values, top.indices

    def nothing():
        return tf.zeros([0, k], tf.float32), tf.zeros([0, k], tf.int32)

    # The model's reshapes cannot infer a token count from an empty batch.
    scores, classes = tf.cond(tf.shape(good_pixels)[0] > 0, classify, nothing)
    where_good = tf.expand_dims(tf.boolean_mask(index, good), -1)
    shape = tf.stack([count, k])
    classes = tf.tensor_scatter_nd_update(
        tf.fill(shape, tf.constant(-1, tf.int64)), where_good, tf.cast(classes, tf.int64)
    )
    scores = tf.tensor_scatter_nd_update(tf.zeros(shape, tf.float32), where_good, scores)
    labels = tf.where(classes >= 0, tf.gather(names, tf.maximum(classes, 0)), "")

    all_status = tf.tensor_scatter_nd_update(
        tf.fill([count], tf.constant(vit_images.CORRUPT, tf.int64)), index[:, None], status
    )
    all_height = tf.tensor_scatter_nd_update(tf.zeros([count], tf.int64), index[:, None], height)
    all_width = tf.tensor_scatter_nd_update(tf.zeros([count], tf.int64), index[:, None], width)
    messages = tf.constant(
        [vit_images.status_message(code) for code in range(vit_images.CORRUPT + 1)]
    )
    too_large = tf.strings.join(
        [
            "image too large: ",
            tf.strings.as_string(all_height),
            "x",
            tf.strings.as_string(all_width),
            f" pixels is more than max_pixels={max_pixels:,}",
        ]
    )
    error = tf.where(
        tf.equal(all_status, vit_images.TOO_LARGE), too_large, tf.gather(messages, all_status)
    )
    return {"classes": classes, "labels": labels, "scores": scores, "error": error}


def export_saved_model(
    model,
    export_dir,
    version=1,
    class_names=None,
    top_k=5,
    max_pixels=vit_images.MAX_PIXELS,
    overwrite=False,
):
    """Exports a classifier as a versioned SavedModel for TF Serving.

    The folder is written under a temporary name inside `export_dir` and
    renamed to `<export_dir>/<version>` only when complete, so a server
    watching `export_dir` never sees half a model, and a failure leaves
    nothing behind.

    Args:
        model: a `keras.Model` taking RGB pixels in [0, 255] of a fixed size
            and returning `(batch, classes)` probabilities or logits (any
            `keras_vit` model with `include_top=True`).
        export_dir: the model's base folder (TF Serving's
            `--model_base_path`).
        version: positive int, the version folder's name. Defaults to `1`.
        class_names: optional list of names, one per class. Defaults to the
            ImageNet-1k names for 1000-class heads and to the ids otherwise.
        top_k: int, how many classes `serve_bytes` returns. Defaults to `5`.
        max_pixels: `serve_bytes` refuses larger images before decoding.
        overwrite: bool, replace an existing version folder. Defaults to
            `False` (an existing one is an error).

    Returns:
        The path of the version folder, e.g. `"models/vit/1"`.

    Example:

    >>> import tempfile
    >>> model = keras_vit.ViT(1, 8, 16, 1, 8, input_shape=(8, 8, 3), classes=2)
    >>> path = export_saved_model(model, tempfile.mkdtemp(), class_names=["a", "b"])
    >>> sorted(tf.saved_model.load(path).signatures)
    ['features', 'serve_bytes', 'serving_default']
    """
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(
            f"`version` must be a positive int (TF Serving's version folder). Received: version={version!r}"
        )
    if not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"`top_k` must be a positive int. Received: top_k={top_k!r}")
    image_input_shape(model)
    names = resolve_class_names(model, class_names)
    export_dir = os.fspath(export_dir)
    target = os.path.join(export_dir, str(int(version)))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(
            f"The version folder already exists; pick another `version` or pass overwrite=True. "
            f"Received: {target!r}"
        )
    os.makedirs(export_dir, exist_ok=True)
    # TF Serving only loads numeric folder names, so it ignores this one.
    tmp = os.path.join(export_dir, f".tmp-{int(version)}-{uuid.uuid4().hex[:8]}")
    with tempfile.TemporaryDirectory() as scratch:
        labels_file = os.path.join(scratch, "labels.txt")
        with open(labels_file, "w", encoding="utf-8") as f:
            f.write("".join(f"{n}\n" for n in names))
        module = _ServingModule(model, names, int(top_k), int(max_pixels), labels_file)
        try:
            tf.saved_model.save(
                module,
                tmp,
                signatures={name: getattr(module, name) for name in SIGNATURES},
            )
            _replace_folder(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _replace_folder(source, target):
    if not os.path.exists(target):
        os.rename(source, target)
        return
    old = f"{target}.old-{uuid.uuid4().hex[:8]}"
    os.rename(target, old)
    os.rename(source, target)
    shutil.rmtree(old, ignore_errors=True)


def load_saved_model_labels(path):
    """Reads the class names stored in an exported SavedModel's `assets/labels.txt`."""
    labels = os.path.join(os.fspath(path), "assets", "labels.txt")
    if not os.path.isfile(labels):
        return None
    with open(labels, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def export_tflite(model, path, quantize="float32", representative_data=None, int8_io=False, **kwargs):
    """Exports a TFLite/LiteRT file; see `keras_vit.litert.export_tflite` (same arguments)."""
    from keras_vit import litert

    return litert.export_tflite(model, path, quantize, representative_data, int8_io, **kwargs)
