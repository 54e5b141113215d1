"""`keras-vit export` and `keras-vit predict`: deployment from the command line.

    keras-vit export --weights vit.keras --format tflite --quantize all --calibration images/ --output out/
    keras-vit export --variant Ti/16 --format saved_model,tflite --quantize float32,dynamic --output out/
    keras-vit predict cat.jpg dog.png --weights out/1 --top 3 --json

`export` prints, for the Keras model and every exported file, the file size
and the median single-image latency on this machine, and for TFLite files the
agreement with the Keras model on the calibration (or random) images.
`predict` takes a `.keras` file, a SavedModel folder (or a TF Serving base
folder: the highest version is used), a `.tflite` file, or a weights
catalogue name.
"""

import glob
import json
import os
import sys
import tempfile

import numpy as np
from absl import flags

from keras_vit.cli import parse_flags

FORMATS = ("saved_model", "tflite", "onnx")


def _split(text):
    return [part.strip() for part in text.split(",") if part.strip()]


def _fail(message):
    print(f"keras-vit: error: {message}", file=sys.stderr)
    return 1


# --- loading models ---------------------------------------------------------


class Classifier:
    """A loaded classifier of any supported kind: `probabilities(images)`, `class_names`, `input_shape`."""

    def __init__(self, kind, source, probabilities, class_names, input_shape, keras_model=None):
        self.kind = kind
        self.source = source
        self.probabilities = probabilities
        self.class_names = class_names
        self.input_shape = input_shape
        self.keras_model = keras_model


def _default_names(count, names):
    from keras_vit.imagenet import class_index

    if names is not None and len(names) == count:
        return names
    if count == 1000:
        index = class_index()
        return [index[str(i)][1] for i in range(count)]
    return [str(i) for i in range(count)]


def _saved_model_folder(path):
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [d for d in os.listdir(path) if d.isdigit() and os.path.isfile(os.path.join(path, d, "saved_model.pb"))]
    if versions:
        return os.path.join(path, max(versions, key=int))
    return None


def _from_keras_model(model, source, names=None):
    from keras_vit import export as vit_export

    shape = vit_export.image_input_shape(model)
    count = vit_export.num_classes(model)
    softmax = not vit_export.outputs_probabilities(model)

    def probabilities(images):
        out = np.asarray(model.predict_on_batch(images))
        if softmax:
            out = np.exp(out - out.max(-1, keepdims=True))
            out /= out.sum(-1, keepdims=True)
        return out

    return Classifier("keras", source, probabilities, _default_names(count, names), shape, model)


def load_classifier(source):
    """Loads a `.keras` file, a SavedModel folder, a `.tflite` file, a shipped model or a catalogue name."""
    from keras_vit import checkpoints
    from keras_vit import export as vit_export

    path = os.fspath(source)
    if path in checkpoints.SHIPPED:
        path = checkpoints.shipped_path(path)
    if os.path.isdir(path):
        folder = _saved_model_folder(path)
        if folder is None:
            raise ValueError(
                f"The folder is not a SavedModel (no saved_model.pb, no version folders). Received: {path!r}"
            )
        import tensorflow as tf

        loaded = tf.saved_model.load(folder)
        if "serving_default" not in loaded.signatures:
            raise ValueError(f"The SavedModel has no serving_default signature. Received: {folder!r}")
        serve = loaded.signatures["serving_default"]
        spec = list(serve.structured_input_signature[1].values())[0]
        shape = tuple(int(d) for d in spec.shape[1:])

        def probabilities(images):
            out = serve(tf.constant(images, tf.float32))
            return next(iter(out.values())).numpy()

        count = int(list(serve.structured_outputs.values())[0].shape[-1])
        names = _default_names(count, vit_export.load_saved_model_labels(folder))
        return Classifier("saved_model", folder, probabilities, names, shape)
    if path.endswith(".tflite"):
        if not os.path.isfile(path):
            raise ValueError(f"The .tflite file does not exist. Received: {path!r}")
        from keras_vit.litert import LiteRTModel

        runner = LiteRTModel(path)
        count = int(runner.output["shape_signature"][-1])
        names = _default_names(count, vit_export.read_labels(path))
        return Classifier("tflite", path, runner, names, runner.input_shape)
    if path.endswith(".keras"):
        if not os.path.isfile(path):
            raise ValueError(f"The .keras file does not exist. Received: {path!r}")
        import keras

        import keras_vit  # noqa: F401  registers the layers for safe-mode loading

        return _from_keras_model(keras.models.load_model(path), path, vit_export.read_labels(path))
    if path.endswith(".h5"):
        raise ValueError(
            "A .weights.h5 file holds no architecture; save the whole model with model.save('x.keras') "
            f"or pass a catalogue name. Received: {path!r}"
        )
    return _from_catalogue(path)


def _from_catalogue(name):
    from keras_vit import checkpoints

    if not checkpoints.is_catalogue_name(name) or name in ("imagenet", "imagenet21k"):
        raise ValueError(
            "Not a model file or folder (expected a .keras file, a SavedModel folder or a .tflite file) "
            f"nor a weights catalogue name (keras_vit.checkpoints.list_weights()). Received: {name!r}"
        )
    return _from_keras_model(checkpoints.build_model(name), name)


# --- export -------------------------------------------------------------------


def _calibration_images(spec, shape, count):
    """Images for int8 calibration and verification: a .npy file, image files, or random noise."""
    from keras_vit import images as vit_images

    rng = np.random.default_rng(0)
    if spec in ("", "random"):
        return rng.uniform(0, 255, (count,) + shape).astype("float32"), "random"
    if spec.endswith(".npy"):
        data = np.load(spec, allow_pickle=False).astype("float32")
        if data.ndim == 3 and shape[-1] == 1:
            data = data[..., None]
        if tuple(data.shape[1:]) != shape:
            raise ValueError(f"--calibration array must be (n,) + {shape}. Received: shape {data.shape} in {spec!r}")
        return data[:count], spec
    pattern = os.path.join(spec, "**", "*") if os.path.isdir(spec) else spec
    paths = sorted(glob.glob(pattern, recursive=True))
    paths = [p for p in paths if os.path.isfile(p)]
    if not paths:
        raise ValueError(f"--calibration matched no files. Received: {spec!r}")
    loaded = []
    for p in paths:
        try:
            loaded.append(vit_images.load_image(p, shape[:2], shape[-1]))
        except vit_images.ImageError as error:
            print(f"skipping {error}", file=sys.stderr)
        if len(loaded) >= count:
            break
    if not loaded:
        raise ValueError(f"--calibration holds no readable image. Received: {spec!r}")
    return np.stack(loaded), spec


def _size_mb(path):
    if os.path.isdir(path):
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)
    else:
        total = os.path.getsize(path)
    return total / 1e6


def random_model(variant, image_size=224, classes=1000):
    """A `variant` ViT with random weights, its head included, for latency and export checks."""
    from keras_vit.model import CONSTRUCTORS
    from keras_vit.variants import canonical_name

    model = CONSTRUCTORS[canonical_name(variant)](
        weights=None, classes=classes, input_shape=(image_size, image_size, 3)
    )
    # From scratch the head is all zeros, so every image would get the same output.
    rng = np.random.default_rng(0)
    for weight in model.get_layer("head").weights:
        weight.assign(rng.normal(0, 0.02, weight.shape).astype("float32"))
    return model


def _build_model(values):
    if values.weights:
        return load_classifier(values.weights)
    model = random_model(values.variant, values.image_size, values.classes)
    return _from_keras_model(model, f"random {values.variant}")


def export(argv):
    """Exports a model to a SavedModel, TFLite files (per quantization mode) and/or ONNX."""

    def define(v):
        def string(name, default, text):
            flags.DEFINE_string(name, default, text, flag_values=v)

        def integer(name, default, text):
            flags.DEFINE_integer(name, default, text, flag_values=v)

        string("weights", "", "A .keras file or catalogue name; empty: random weights of --variant.")
        string("variant", "Ti/16", "ViT variant used with random weights.")
        integer("image_size", 224, "Image size used with random weights.")
        integer("classes", 1000, "Classes used with random weights.")
        string("format", "tflite", f"Comma-separated formats: {', '.join(FORMATS)}.")
        string("quantize", "float32", "Comma-separated TFLite modes (float32, float16, dynamic, int8, selective) or 'all'.")
        flags.DEFINE_bool("int8_io", False, "int8 input/output tensors for the int8 TFLite file.", flag_values=v)
        string(
            "calibration",
            "random",
            "Images for int8/selective calibration and the TFLite checks: a folder or glob of images, a .npy "
            "array, or 'random' (fine for latency only).",
        )
        integer("calibration_samples", 200, "Number of calibration images.")
        string("output", None, "Output folder.")
        integer("version", 1, "SavedModel version folder.")
        integer("top_k", 5, "Classes returned by serve_bytes.")
        string(
            "class_names",
            "",
            "File with one class name per line (default: <weights>.labels.txt; ImageNet for 1000 classes).",
        )
        flags.DEFINE_bool("overwrite", False, "Replace an existing SavedModel version.", flag_values=v)
        integer("runs", 20, "Timed single-image runs per model; 0 skips latency.")
        integer("threads", 0, "LiteRT interpreter threads (0: one per CPU core, as Keras uses them).")

    values, extra = parse_flags(argv, define, "--output DIR [--weights NAME_OR_PATH] [--format ...] [--quantize ...]")
    if extra:
        return _fail(f"export takes no positional arguments. Received: {extra}")
    if not values.output:
        return _fail("--output is required (the folder to write to).")
    formats = _split(values.format)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        return _fail(f"--format must be among {FORMATS}. Received: {values.format!r}")
    from keras_vit import export as vit_export
    from keras_vit import litert

    modes = list(litert.QUANTIZE_MODES) if values.quantize == "all" else _split(values.quantize)
    bad = [m for m in modes if m not in litert.QUANTIZE_MODES]
    if bad:
        return _fail(f"--quantize must be among {litert.QUANTIZE_MODES} or 'all'. Received: {values.quantize!r}")
    try:
        classifier = _build_model(values)
        model = classifier.keras_model
        if model is None:
            return _fail(
                f"export needs a Keras model (.keras file or catalogue name). Received: --weights={values.weights!r}"
            )
        names = classifier.class_names
        if values.class_names:
            with open(values.class_names, encoding="utf-8") as f:
                names = [line.rstrip("\n") for line in f if line.strip()]
        names = vit_export.resolve_class_names(model, names)
        calibration, calibration_source = _calibration_images(
            values.calibration, classifier.input_shape, values.calibration_samples
        )
    except (ValueError, OSError) as error:
        return _fail(str(error))

    os.makedirs(values.output, exist_ok=True)
    threads = values.threads or None
    rows = []
    keras_file = values.weights if values.weights.endswith(".keras") else None
    with tempfile.TemporaryDirectory() as scratch:
        if keras_file is None:
            keras_file = os.path.join(scratch, f"{model.name}.keras")
            model.save(keras_file)
        latency = litert.keras_latency_ms(model, values.runs) if values.runs else None
        shown = keras_file if values.weights else "(in memory)"
        rows.append(("keras", "-", shown, _size_mb(keras_file), latency, None))
    try:
        if "saved_model" in formats:
            path = vit_export.export_saved_model(
                model, values.output, values.version, names, values.top_k, overwrite=values.overwrite
            )
            rows.append(("saved_model", "float32", path, _size_mb(path), None, None))
        if "tflite" in formats:
            for mode in modes:
                path = os.path.join(values.output, f"{model.name}_{mode}.tflite")
                int8_io = values.int8_io and mode == "int8"
                litert.export_tflite(model, path, mode, calibration, int8_io, names, values.calibration_samples)
                report = litert.verify_tflite(path, model, calibration, num_threads=threads)
                latency = litert.tflite_latency_ms(path, values.runs, num_threads=threads) if values.runs else None
                rows.append(("tflite", mode, path, _size_mb(path), latency, report))
        if "onnx" in formats:
            from keras_vit import onnx_export

            path = onnx_export.export_onnx(model, os.path.join(values.output, f"{model.name}.onnx"))
            report = onnx_export.verify_onnx(path, model, calibration[:16])
            latency = onnx_export.onnx_latency_ms(path, values.runs) if values.runs else None
            rows.append(("onnx", "float32", path, _size_mb(path), latency, report))
    except (ValueError, OSError, ImportError) as error:
        return _fail(str(error))
    _print_report(rows, calibration_source, len(calibration))
    return 0


def _print_report(rows, calibration_source, count):
    print(f"{'format':<12} {'mode':<9} {'size MB':>9} {'latency ms':>11} {'max |diff|':>11} {'top-1 agree':>11}  path")
    for fmt, mode, path, size, latency, report in rows:
        lat = f"{latency:11.2f}" if latency is not None else f"{'-':>11}"
        diff = f"{report['max_abs_diff']:11.2e}" if report else f"{'-':>11}"
        agree = f"{100 * report['top1_agreement']:10.1f}%" if report else f"{'-':>11}"
        print(f"{fmt:<12} {mode:<9} {size:9.2f} {lat} {diff} {agree}  {path}")
    print(
        "latency: median of single-image runs on this machine; "
        f"agreement with Keras on {count} {calibration_source} images"
    )


# --- predict ------------------------------------------------------------------


def predict(argv):
    """Classifies image files and prints the top classes with their scores."""

    def define(v):
        flags.DEFINE_string(
            "weights", None, "A .keras file, SavedModel folder, .tflite file, shipped model (vit_fashion_mnist) or "
            "catalogue name.", flag_values=v
        )
        flags.DEFINE_integer("top", 5, "How many classes to print per image.", flag_values=v)
        flags.DEFINE_bool("json", False, "Print one JSON document instead of text.", flag_values=v)

    values, paths = parse_flags(argv, define, "IMAGE... --weights NAME_OR_PATH [--top 5] [--json]")
    return _predict(values, paths)


def _predict(values, paths):
    if not values.weights:
        return _fail("--weights is required: a .keras file, a SavedModel folder, a .tflite file or a catalogue name.")
    if not paths:
        return _fail("give at least one image file: keras-vit predict IMAGE... --weights NAME_OR_PATH")
    if values.top < 1:
        return _fail(f"--top must be a positive int. Received: --top={values.top}")
    from keras_vit import images as vit_images

    try:
        classifier = load_classifier(values.weights)
    except (ValueError, OSError) as error:
        return _fail(str(error))
    results = []
    height, width, channels = classifier.input_shape
    for path in paths:
        try:
            image = vit_images.load_image(path, (height, width), channels)
        except vit_images.ImageError as error:
            results.append({"image": path, "error": str(error), "predictions": []})
            continue
        probs = np.asarray(classifier.probabilities(image[None]))[0]
        best = np.argsort(-probs, kind="stable")[: values.top]
        predictions = [
            {"class_id": int(i), "label": classifier.class_names[i], "score": float(probs[i])} for i in best
        ]
        results.append({"image": path, "error": None, "predictions": predictions})
    if values.json:
        print(json.dumps({"model": classifier.source, "results": results}, indent=2))
    else:
        for result in results:
            print(result["image"])
            if result["error"]:
                print(f"  error: {result['error']}")
            for p in result["predictions"]:
                name = p["label"] if p["label"] == str(p["class_id"]) else f"{p['label']} ({p['class_id']})"
                print(f"  {p['score']:.4f}  {name}")
    failed = [r for r in results if r["error"]]
    for r in failed:
        print(f"keras-vit: error: {r['error']}", file=sys.stderr)
    return 1 if failed else 0
