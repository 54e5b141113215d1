"""TFLite/LiteRT export: every mode, builtin-ops check, parity, variable batch, what selective keeps in float, Fashion-MNIST agreement."""

import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import data
from keras_vit import export as vit_export
from keras_vit import litert


def tiny(classes=3):
    model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=classes)
    rng = np.random.default_rng(0)
    for weight in model.get_layer("head").weights:
        weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    return model


def pixels(n, shape=(32, 32, 3), seed=1):
    return np.random.default_rng(seed).uniform(0, 255, (n,) + shape).astype("float32")


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    """`{mode: path}`: the test model exported once in every mode, each file in a folder of its own."""
    written = {}
    for mode in litert.QUANTIZE_MODES:
        path = str(tmp_path_factory.mktemp(mode) / f"vit_{mode}.tflite")
        assert litert.export_tflite(model, path, mode, representative_data=pixels(20), class_names=["a", "b", "c"]) == path
        written[mode] = path
    return written


@pytest.mark.parametrize("mode", litert.QUANTIZE_MODES)
def test_every_mode_is_builtin_only_runs_any_batch_and_stays_close(model, files, mode):
    path = files[mode]
    assert litert.builtin_op_problems(path) == []
    assert vit_export.read_labels(path) == ["a", "b", "c"]
    assert sorted(os.listdir(os.path.dirname(path))) == sorted([f"vit_{mode}.tflite", f"vit_{mode}.tflite.labels.txt"])
    runner = litert.LiteRTModel(path)
    assert list(runner.input["shape_signature"]) == [-1, 32, 32, 3]
    images = pixels(5)
    expected = model.predict(images, verbose=0)
    for batch in (1, 5, 2):
        out = runner(images[:batch])
        assert out.shape == (batch, 3)
    report = litert.verify_tflite(path, model, images)
    # int8 parity is judged by top-1 agreement on a trained model (the slow test below):
    # a random model's near-tied probabilities say little about it.
    bound = {"float32": 1e-4, "float16": 1e-2, "dynamic": 0.1}.get(mode)
    if bound is not None:
        assert report["max_abs_diff"] <= bound, report
    np.testing.assert_allclose(runner(images).sum(-1), 1.0, atol=0.05)
    np.testing.assert_allclose(runner(images), litert.LiteRTModel(path)(images))
    if mode == "float32":
        assert np.max(np.abs(runner(images) - expected)) <= 1e-4


def test_the_blocks_stay_in_one_xnnpack_partition(files):
    """A shape read at run time (the batch) or an op XNNPACK lacks (unstack) splits the graph among
    XNNPACK partitions. The blocks reshape to constant sizes and split q/k/v, so only the class
    token's broadcast reads the batch size."""
    runner = litert.LiteRTModel(files["float32"])
    runner.interpreter.allocate_tensors()
    ops = [op["op_name"] for op in runner.interpreter._get_ops_details()]
    assert ops.count("SHAPE") == 1, ops
    assert ops.count("DELEGATE") <= 3, ops  # 5 with run-time reshapes and an unstack of q/k/v (2 blocks)


def test_the_interpreter_uses_every_core_by_default(files, monkeypatch):
    from ai_edge_litert import interpreter

    seen = []
    original = interpreter.Interpreter.__init__
    monkeypatch.setattr(interpreter.Interpreter, "__init__",
                        lambda self, *a, **k: seen.append(k.get("num_threads")) or original(self, *a, **k))
    litert.LiteRTModel(files["float32"])
    litert.LiteRTModel(files["float32"], num_threads=1)
    assert seen == [len(os.sched_getaffinity(0)), 1]


def test_quantized_files_are_smaller(files):
    sizes = {mode: os.path.getsize(path) for mode, path in files.items()}
    assert sizes["float16"] < sizes["float32"]
    assert sizes["dynamic"] < sizes["float16"]
    assert sizes["int8"] < sizes["float16"]
    assert sizes["selective"] < sizes["float16"]


def _op_input_types(runner):
    """`{op name: set of its first input's dtype}` over the file's own ops (delegate nodes left out)."""
    dtypes = {t["index"]: t["dtype"] for t in runner.interpreter.get_tensor_details()}
    types = {}
    for op in runner.interpreter._get_ops_details():
        if op["op_name"] != "DELEGATE":
            types.setdefault(op["op_name"], set()).add(dtypes[op["inputs"][0]])
    return types


def test_selective_keeps_in_float_what_xnnpack_has_no_int8_kernel_for(model, files):
    runners = {mode: litert.LiteRTModel(files[mode]) for mode in ("int8", "selective")}
    for runner in runners.values():
        runner.interpreter.allocate_tensors()
    full, selective = (_op_input_types(runners[mode]) for mode in ("int8", "selective"))
    for name in ("BATCH_MATMUL", "SOFTMAX", "GELU", "RSQRT"):
        assert full[name] == {np.int8}, (name, full[name])
        assert selective[name] == {np.float32}, (name, selective[name])
    # The dense layers and the patch embedding stay int8 products.
    assert selective["FULLY_CONNECTED"] == selective["CONV_2D"] == {np.int8}
    # Fewer ops outside XNNPACK: fewer partitions (14 against 8 for these 2 blocks).
    partitions = {mode: [op["op_name"] for op in r.interpreter._get_ops_details()].count("DELEGATE")
                  for mode, r in runners.items()}
    assert partitions["selective"] < partitions["int8"], partitions
    images = pixels(8)
    assert litert.verify_tflite(files["selective"], model, images)["top1_agreement"] >= 0.75


def test_int8_io_takes_and_gives_int8_tensors(model, tmp_path):
    path = litert.export_tflite(model, str(tmp_path / "io.tflite"), "int8", pixels(20), int8_io=True)
    runner = litert.LiteRTModel(path)
    assert runner.input["dtype"] == np.int8 and runner.output["dtype"] == np.int8
    probs = runner(pixels(4))  # LiteRTModel quantizes and dequantizes
    assert probs.shape == (4, 3) and probs.dtype == np.float32
    assert np.all(probs >= 0) and np.all(probs <= 1.0 + 1e-6)


def test_representative_data_may_be_a_dataset_of_pairs(model, tmp_path):
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((pixels(8), np.zeros(8))).batch(4)
    path = litert.export_tflite(model, str(tmp_path / "ds.tflite"), "int8", dataset)
    assert litert.LiteRTModel(path)(pixels(2)).shape == (2, 3)


def test_op_outside_the_builtin_set_is_named_and_no_file_is_left(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(3)(x)
    # erf has no TFLite builtin: only the Flex (Select TF ops) delegate runs it.
    outputs = keras.layers.Lambda(lambda t: keras.ops.erf(t))(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "erf.tflite"
    with pytest.raises(litert.TFLiteExportError, match=r"tf\.Erf"):
        litert.export_tflite(model, str(path), "float32")
    assert os.listdir(tmp_path) == []

    # A file made elsewhere with Select TF ops is caught by the flatbuffer check.
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    content = converter.convert()
    assert litert.builtin_op_problems(content) == ["FlexErf"]
    with pytest.raises(litert.TFLiteExportError, match="FlexErf"):
        litert.check_builtin_ops(content)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(quantize="int4"), "must be one of"),
        (dict(quantize="int8"), "needs `representative_data`"),
        (dict(quantize="selective"), "needs `representative_data`"),
        (dict(quantize="int8", representative_data=np.zeros((2, 16, 16, 3))), r"shape \(32, 32, 3\)"),
        (dict(quantize="float16", int8_io=True), "needs quantize='int8'"),
        (dict(quantize="selective", representative_data=np.zeros((2, 32, 32, 3)), int8_io=True),
         "needs quantize='int8'"),
    ],
)
def test_bad_arguments_get_clear_errors(model, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        litert.export_tflite(model, str(tmp_path / "m.tflite"), **kwargs)
    assert os.listdir(tmp_path) == []


def test_feature_extractor_exports_without_labels(tmp_path):
    model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), include_top=False)
    path = litert.export_tflite(model, str(tmp_path / "tokens.tflite"))
    assert os.listdir(tmp_path) == ["tokens.tflite"]
    images = pixels(2)
    np.testing.assert_allclose(litert.LiteRTModel(path)(images), model.predict(images, verbose=0), atol=1e-4)


def test_path_must_end_in_tflite(model, tmp_path):
    with pytest.raises(ValueError, match="must end with '.tflite'"):
        litert.export_tflite(model, str(tmp_path / "m.bin"))


@pytest.fixture(scope="module")
def fashion_model():
    train_x, train_y = data.load_fashion_mnist("train")
    test_x, test_y = data.load_fashion_mnist("test")
    train_x, test_x, test_y = train_x.astype("float32"), test_x[:2000].astype("float32"), test_y[:2000]
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(2, 64, 128, 4, 7, input_shape=(28, 28, 1), classes=10)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy")
    model.fit(train_x, train_y, batch_size=256, epochs=3, verbose=0)
    return model, train_x[-300:], test_x, test_y


@pytest.mark.slow
@pytest.mark.parametrize("mode, agreement", [("dynamic", 0.99), ("int8", 0.98), ("selective", 0.98)])
def test_quantized_fashion_mnist_model_agrees_with_keras(fashion_model, mode, agreement, tmp_path):
    model, calibration, test_x, test_y = fashion_model
    path = litert.export_tflite(
        model, str(tmp_path / f"fashion_{mode}.tflite"), mode, calibration, class_names=data.FASHION_MNIST_CLASSES
    )
    report = litert.verify_tflite(path, model, test_x, test_y)
    print(f"{mode}: {report}")
    assert report["keras_accuracy"] >= 0.8, report  # the model learned something
    assert report["top1_agreement"] >= agreement, report
    assert abs(report["accuracy_drop"]) <= 0.02, report
    assert vit_export.read_labels(path)[9] == "Ankle boot"
