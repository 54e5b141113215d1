"""TFLite / LiteRT export, verification and latency measurement.

`export_tflite(model, "vit.tflite", quantize=...)` converts a Keras model
through a SavedModel (the path Keras' own `model.export(format="litert")`
takes) with the TFLite converter, in one of five modes:

- `"float32"`: no quantization;
- `"float16"`: float16 weights, float compute;
- `"dynamic"`: int8 weights, activations quantized on the fly;
- `"int8"`: full integer quantization calibrated on `representative_data`
  (float input/output, or int8 with `int8_io=True`);
- `"selective"`: the same calibrated int8 quantization, except the ops
  XNNPACK has no int8 kernel for (`FLOAT_OPS`: the attention products,
  softmax, GELU and LayerNorm's reciprocal square root) stay in float32, so
  XNNPACK runs nearly all of it on a CPU (left outside: each LayerNorm's
  int8 `+ epsilon` and the class token's broadcast). Float input/output.

Only TFLite builtin ops are allowed (no Flex/Select TF ops), so the file runs
on any LiteRT runtime; the exporter names the op that breaks this. The batch
dimension stays variable. Files are run with the `ai-edge-litert` interpreter
(`LiteRTModel`).
"""

import functools
import os
import re
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

from keras_vit import atomic
from keras_vit import export as vit_export

QUANTIZE_MODES = ("float32", "float16", "dynamic", "int8", "selective")
CALIBRATED_MODES = ("int8", "selective")
# TFLite ops that "selective" leaves in float32: XNNPACK runs them in float but has
# no int8 kernel for them (a product of two activations, softmax, GELU, rsqrt), so in
# a full-integer file they fall back to LiteRT's reference kernels between XNNPACK
# partitions.
FLOAT_OPS = ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT", "SQUARED_DIFFERENCE")
DEFAULT_CALIBRATION_SAMPLES = 200


class TFLiteExportError(ValueError):
    """The model cannot become a builtin-ops-only TFLite file; the message names the ops."""


def _calibration_samples(representative_data, image_shape, limit):
    """Yields `[1, H, W, C]` float32 samples from an array, a tf.data.Dataset or an iterable."""
    if isinstance(representative_data, np.ndarray):
        items = [representative_data]
    elif isinstance(representative_data, tf.data.Dataset):
        items = representative_data.as_numpy_iterator()
    elif callable(representative_data):
        items = representative_data()
    else:
        items = representative_data
    count = 0
    for item in items:
        if isinstance(item, (tuple, list)) and not isinstance(item, np.ndarray):
            item = item[0]  # (images, labels) pairs
        batch = np.asarray(item, dtype="float32")
        if batch.ndim == 3:
            batch = batch[None]
        if batch.ndim != 4 or tuple(batch.shape[1:]) != tuple(image_shape):
            raise ValueError(
                f"`representative_data` must hold images of shape {tuple(image_shape)} (the model's "
                f"input), as one array, batches or single images. Received: shape {batch.shape}"
            )
        for image in batch:
            if count >= limit:
                return
            count += 1
            yield [image[None]]
    if count == 0:
        raise ValueError("`representative_data` holds no images; int8 calibration needs some.")


def _named_ops_from_error(message):
    ops = re.findall(r"'(tf\.[A-Za-z0-9_]+)' op is neither", message)
    select = re.search(r"TF Select ops: ([^\n]+)", message)
    if select:
        ops += [f"tf.{name.strip()}" for name in select.group(1).split(",")]
    return sorted(set(ops))


def builtin_op_problems(model_content):
    """Lists the ops of a TFLite flatbuffer that are not builtin (Flex/Select or custom).

    Args:
        model_content: bytes of a `.tflite` file, or its path.

    Returns:
        A sorted list of names such as `"FlexErf"`; empty when every op is builtin.
    """
    from tensorflow.lite.python import schema_py_generated as schema

    if not isinstance(model_content, (bytes, bytearray)):
        with open(model_content, "rb") as f:
            model_content = f.read()
    flatbuffer = schema.Model.GetRootAsModel(model_content, 0)
    problems = set()
    for i in range(flatbuffer.OperatorCodesLength()):
        code = flatbuffer.OperatorCodes(i)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            problems.add((code.CustomCode() or b"<unnamed custom op>").decode())
    return sorted(problems)


def check_builtin_ops(model_content):
    """Raises `TFLiteExportError` naming the non-builtin ops of a TFLite model, if any."""
    problems = builtin_op_problems(model_content)
    if problems:
        raise TFLiteExportError(
            "The TFLite model uses ops outside the TFLite builtin set (Flex/Select TF or custom ops), "
            f"which a plain LiteRT runtime cannot run: {', '.join(problems)}"
        )


def convert(model, quantize="float32", representative_data=None, int8_io=False,
            calibration_samples=DEFAULT_CALIBRATION_SAMPLES):
    """Converts a Keras image model to TFLite flatbuffer bytes; see `export_tflite`."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"`quantize` must be one of {QUANTIZE_MODES}. Received: quantize={quantize!r}")
    if quantize in CALIBRATED_MODES and representative_data is None:
        raise ValueError(
            f"quantize={quantize!r} needs `representative_data`: a few hundred images from your training "
            "data (an array (n, height, width, channels) of pixels as the model takes them)."
        )
    if int8_io and quantize != "int8":
        raise ValueError(f"`int8_io=True` needs quantize='int8'. Received: quantize={quantize!r}")
    image_shape = vit_export.image_input_shape(model)
    with tempfile.TemporaryDirectory() as saved_model_dir:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            functools.partial(model.__call__, training=False),
            input_signature=[tf.TensorSpec((None,) + image_shape, tf.float32, name="images")],
        )
        archive.write_out(saved_model_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir)
        # Unlike `model.export(format="litert")`, no SELECT_TF_OPS fallback and no
        # resource variables: the file must run on a builtin-ops-only runtime.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize in CALIBRATED_MODES:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: _calibration_samples(
                representative_data, image_shape, calibration_samples
            )
            if int8_io:
                converter.inference_input_type = tf.int8
                converter.inference_output_type = tf.int8
        try:
            content = _selective(converter) if quantize == "selective" else converter.convert()
        except Exception as error:  # the converter raises several private error types
            ops = _named_ops_from_error(str(error))
            if not ops:
                raise
            raise TFLiteExportError(
                f"The model needs TensorFlow ops that have no TFLite builtin (quantize={quantize!r}): "
                f"{', '.join(ops)}. Rewrite those layers with ops TFLite supports; Flex/Select TF ops "
                "are not allowed because plain LiteRT runtimes cannot run them."
            ) from error
    check_builtin_ops(content)
    return content


def export_tflite(model, path, quantize="float32", representative_data=None, int8_io=False,
                  class_names=None, calibration_samples=DEFAULT_CALIBRATION_SAMPLES):
    """Exports a Keras image classifier to a TFLite (LiteRT) file.

    Quantization follows the TFLite post-training modes
    (https://ai.google.dev/edge/litert/models/post_training_quantization).

    The file is written under a temporary name and renamed when complete.
    Class names go next to it as `<path>.labels.txt` (the ImageNet names for
    a 1000-class head when `class_names` is not given).

    Args:
        model: a `keras.Model` with one fixed-size image input, e.g. any
            `keras_vit` model (feature extractors included).
        path: the `.tflite` file to write.
        quantize: `"float32"`, `"float16"`, `"dynamic"`, `"int8"` or
            `"selective"`. Defaults to `"float32"`.
        representative_data: images for int8 calibration (required for
            `"int8"` and `"selective"`): an array `(n, height, width, channels)`, a
            `tf.data.Dataset` of images or `(images, labels)`, or an iterable
            of those; pixels as the model takes them.
        int8_io: bool, int8 input and output tensors instead of float32
            (only with `"int8"`). Defaults to `False`.
        class_names: optional list of class names.
        calibration_samples: int, at most this many images are used for
            calibration. Defaults to `200`.

    Returns:
        `path`.

    Raises:
        TFLiteExportError: when the model needs an op outside the TFLite
            builtin set; the message names it.

    Example:

    >>> import tempfile, os
    >>> model = keras_vit.ViT(1, 8, 16, 1, 8, input_shape=(8, 8, 3), classes=2)
    >>> path = export_tflite(model, os.path.join(tempfile.mkdtemp(), "m.tflite"))
    >>> LiteRTModel(path)(np.zeros((3, 8, 8, 3), "float32")).shape
    (3, 2)
    """
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(f"The TFLite file name must end with '.tflite'. Received: path={path!r}")
    # Feature extractors (no 2-D output) export too, without a labels file.
    output_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else ()
    names = vit_export.resolve_class_names(model, class_names) if len(output_shape) == 2 else None
    content = convert(model, quantize, representative_data, int8_io, calibration_samples)

    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(content)

    atomic.write_with(path, write)
    if names is not None:
        vit_export.write_labels(path, names)
    return path


def _selective(converter):
    """Calibrates, then quantizes every op to int8 except `FLOAT_OPS`."""
    # The quantization debugger is TFLite's public way to keep named ops in float;
    # building it calibrates once, and the file it returns carries no debug ops.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(FLOAT_OPS))
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_options=options)
    return debugger.get_nondebug_quantized_model()


def default_threads():
    """LiteRT interpreter threads when none are asked for: the CPU cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class LiteRTModel:
    """Runs a `.tflite` image model with the `ai-edge-litert` interpreter.

    Takes float32 pixels as the Keras model does, whatever the file's input
    type (int8 inputs are quantized with the file's scale and zero point, int8
    outputs dequantized), and any batch size.

    Args:
        path: the `.tflite` file.
        num_threads: optional int, interpreter threads. Defaults to one per
            CPU core, as TensorFlow uses them (the interpreter's own default
            is one thread).
    """

    def __init__(self, path, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.path = os.fspath(path)
        num_threads = num_threads or default_threads()
        self.interpreter = Interpreter(model_path=self.path, num_threads=num_threads)
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.input_shape = tuple(int(d) for d in self.input["shape_signature"][1:])
        self._batch = None

    def __call__(self, images):
        images = np.asarray(images, dtype="float32")
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            raise ValueError(
                f"{os.path.basename(self.path)} takes images of shape (batch,) + {self.input_shape}. "
                f"Received: shape {images.shape}"
            )
        if self._batch != images.shape[0]:
            self.interpreter.resize_tensor_input(self.input["index"], images.shape, strict=False)
            self.interpreter.allocate_tensors()
            self._batch = images.shape[0]
        if self.input["dtype"] != np.float32:
            scale, zero_point = self.input["quantization"]
            info = np.iinfo(self.input["dtype"])
            images = np.clip(np.round(images / scale + zero_point), info.min, info.max)
            images = images.astype(self.input["dtype"])
        self.interpreter.set_tensor(self.input["index"], images)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        if out.dtype != np.float32:
            scale, zero_point = self.output["quantization"]
            out = (out.astype("float32") - zero_point) * scale
        return out


def predict_in_batches(fn, images, batch_size=64):
    """Applies `fn` to `images` in batches and concatenates the outputs."""
    return np.concatenate([np.asarray(fn(images[i : i + batch_size])) for i in range(0, len(images), batch_size)])


def verify_tflite(path, model, images, labels=None, batch_size=64, num_threads=None):
    """Compares a `.tflite` file with its Keras model on the same images.

    Args:
        path: the `.tflite` file.
        model: the Keras model it was exported from.
        images: float32 array `(n, height, width, channels)`.
        labels: optional int array `(n,)`, to report both accuracies.

    Returns:
        A dict: `max_abs_diff` (of the outputs), `top1_agreement` (fraction of
        images with the same top-1 class), and with `labels`
        `keras_accuracy`, `tflite_accuracy`, `accuracy_drop` (Keras minus
        TFLite).
    """
    runner = LiteRTModel(path, num_threads=num_threads)
    images = np.asarray(images, dtype="float32")
    expected = predict_in_batches(lambda x: model.predict_on_batch(x), images, batch_size)
    got = predict_in_batches(runner, images, batch_size)
    report = {
        "max_abs_diff": float(np.max(np.abs(expected - got))),
        "top1_agreement": float(np.mean(expected.argmax(-1) == got.argmax(-1))),
    }
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        report["keras_accuracy"] = float(np.mean(expected.argmax(-1) == labels))
        report["tflite_accuracy"] = float(np.mean(got.argmax(-1) == labels))
        report["accuracy_drop"] = report["keras_accuracy"] - report["tflite_accuracy"]
    return report


def median_latency_ms(fn, image, runs=20, warmup=3):
    """Median wall time of `fn(image)` in milliseconds over `runs` calls, after `warmup` calls."""
    for _ in range(warmup):
        fn(image)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def keras_callable(model, batch=1):
    """The Keras model's inference call as a `tf.function` traced for `batch` images, as latency is
    measured: what a deployed TensorFlow model runs, without `predict`'s per-call overhead."""
    spec = tf.TensorSpec((batch,) + vit_export.image_input_shape(model), tf.float32)
    return tf.function(lambda x: model(x, training=False), input_signature=[spec])


def keras_latency_ms(model, runs=20, warmup=3):
    """Median single-image latency of the Keras model (a compiled `tf.function`), in ms."""
    image = np.random.default_rng(0).uniform(0, 255, (1,) + vit_export.image_input_shape(model)).astype("float32")
    call = keras_callable(model)
    return median_latency_ms(lambda x: call(x).numpy(), image, runs, warmup)


def tflite_latency_ms(path, runs=20, warmup=3, num_threads=None):
    """Median single-image latency of a `.tflite` file with the LiteRT interpreter, in ms."""
    runner = LiteRTModel(path, num_threads=num_threads)
    image = np.random.default_rng(0).uniform(0, 255, (1,) + runner.input_shape).astype("float32")
    return median_latency_ms(runner, image, runs, warmup)
