"""ONNX export (optional): `pip install "keras-vit[onnx]"` adds tf2onnx and onnxruntime.

Keras' `model.export(format="onnx")` runs tf2onnx on the TensorFlow backend.
tf2onnx has no converter for `Erfc`, which TensorFlow's exact GELU
(`keras.activations.gelu`) uses, so such a model fails to load in onnxruntime
("No Op registered for Erfc"). keras_vit's own blocks compute the GELU with
`Erf` (`keras_vit.layers.gelu`); for any other Keras model `export_onnx`
converts the same way and rewrites `Erfc(x)` as `1 - Erf(x)`.
"""

import os

import numpy as np
import tensorflow as tf

from keras_vit import atomic
from keras_vit import export as vit_export
from keras_vit import litert

OPSET = 17


def _require(module):
    try:
        return __import__(module)
    except ImportError as error:
        raise ImportError(
            f"ONNX export needs `{module}`: pip install tf2onnx onnxruntime (or keras-vit[onnx])."
        ) from error


def _erfc_as_one_minus_erf(ctx, node, name, args):
    from tf2onnx import utils

    node.type = "Erf"
    one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1.0, dtype=np.float32))
    sub_name = utils.make_name(f"{node.name}_erfc")
    ctx.insert_new_node_on_output("Sub", node.output[0], name=sub_name, inputs=[one.output[0], node.output[0]])


def export_onnx(model, path, opset=OPSET):
    """Exports a Keras image model to ONNX with a variable batch size; returns `path`.

    The file is written under a temporary name and renamed when complete.

    Args:
        model: a `keras.Model` with one fixed-size image input.
        path: the `.onnx` file to write.
        opset: ONNX opset. Defaults to `17`.
    """
    _require("tf2onnx")
    from keras.src.export.tf2onnx_lib import patch_tf2onnx

    import tf2onnx

    path = os.fspath(path)
    if not path.endswith(".onnx"):
        raise ValueError(f"The ONNX file name must end with '.onnx'. Received: path={path!r}")
    shape = vit_export.image_input_shape(model)
    spec = [tf.TensorSpec((None,) + shape, tf.float32, name="images")]
    function = tf.function(lambda images: model(images, training=False), input_signature=spec)
    patch_tf2onnx()  # Keras' numpy-2 fixes for tf2onnx
    return atomic.write_with(path, lambda tmp: tf2onnx.convert.from_function(
        function,
        input_signature=spec,
        opset=opset,
        custom_op_handlers={"Erfc": (_erfc_as_one_minus_erf, [])},
        output_path=tmp,
    ))


class ONNXModel:
    """Runs an `.onnx` image model with onnxruntime on float32 pixels."""

    def __init__(self, path):
        ort = _require("onnxruntime")
        self.session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, images):
        return self.session.run(None, {self.input_name: np.asarray(images, dtype="float32")})[0]


def verify_onnx(path, model, images):
    """Max abs difference and top-1 agreement of an `.onnx` file with its Keras model."""
    images = np.asarray(images, dtype="float32")
    expected = model.predict_on_batch(images)
    got = ONNXModel(path)(images)
    return {
        "max_abs_diff": float(np.max(np.abs(expected - got))),
        "top1_agreement": float(np.mean(expected.argmax(-1) == got.argmax(-1))),
    }


def onnx_latency_ms(path, runs=20, warmup=3):
    """Median single-image latency of an `.onnx` file with onnxruntime, in ms."""
    runner = ONNXModel(path)
    shape = tuple(runner.session.get_inputs()[0].shape[1:])
    image = np.random.default_rng(0).uniform(0, 255, (1,) + shape).astype("float32")
    return litert.median_latency_ms(runner, image, runs, warmup)
