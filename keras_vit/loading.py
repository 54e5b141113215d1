"""Checking a checkpoint against a keras_vit model and assigning it.

`load_weights` is the one public call; `plan_weights` / `weights_overrides`
/ `load_planned` are what `keras_vit.ViT(weights=...)` uses, so that
input-shape errors come before file errors and the model is built with the
checkpoint's GELU, LayerNorm epsilon, image size and pre_logits width.
"""

import logging
import os

import keras
import numpy as np

from keras_vit import checkpoints, converters, download
from keras_vit import layers as vit_layers
from keras_vit.converters import ATTN, POSEMB, CheckpointError
from keras_vit.resample import RESAMPLE_METHODS, infer_grid, resample_position_embedding
from keras_vit.variants import resnet_stride

log = logging.getLogger("keras_vit")

_BLOCK_PARTS = {
    "LayerNorm_0/scale": ("attention_norm", "gamma"), "LayerNorm_0/bias": ("attention_norm", "beta"),
    "LayerNorm_2/scale": ("mlp_norm", "gamma"), "LayerNorm_2/bias": ("mlp_norm", "beta"),
    ATTN + "query/kernel": ("attention.query_dense", "kernel"), ATTN + "query/bias": ("attention.query_dense", "bias"),
    ATTN + "key/kernel": ("attention.key_dense", "kernel"), ATTN + "key/bias": ("attention.key_dense", "bias"),
    ATTN + "value/kernel": ("attention.value_dense", "kernel"), ATTN + "value/bias": ("attention.value_dense", "bias"),
    ATTN + "out/kernel": ("attention.output_dense", "kernel"), ATTN + "out/bias": ("attention.output_dense", "bias"),
    "MlpBlock_3/Dense_0/kernel": ("mlp_dense_0", "kernel"), "MlpBlock_3/Dense_0/bias": ("mlp_dense_0", "bias"),
    "MlpBlock_3/Dense_1/kernel": ("mlp_dense_1", "kernel"), "MlpBlock_3/Dense_1/bias": ("mlp_dense_1", "bias"),
}


def _layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def model_variables(model):
    """The variables of a keras_vit model keyed by their official checkpoint names."""
    out = {}
    embedding = _layer(model, "embedding")
    if embedding is None:
        raise ValueError(
            "load_weights needs a model built by keras_vit (with an 'embedding' layer). "
            f"Received: model={model.name!r}"
        )
    stem = _layer(model, "resnet")
    if stem is not None:  # a hybrid: its ResNet comes first, as in the network
        out.update(stem.official_variables())
    out["embedding/kernel"], out["embedding/bias"] = embedding.projection.kernel, embedding.projection.bias
    if _layer(model, "class_token") is not None:
        out["cls"] = model.get_layer("class_token").cls
    posemb = model.get_layer("posembed_input")
    if posemb.embedding_type == "learned":
        out[POSEMB] = posemb.pos_embedding
    blocks = [l for l in model.layers if isinstance(l, vit_layers.TransformerBlock)]
    for i, block in enumerate(blocks):
        for key, (path, attr) in _BLOCK_PARTS.items():
            sub = block
            for part in path.split("."):
                sub = getattr(sub, part)
            out[f"Transformer/encoderblock_{i}/{key}"] = getattr(sub, attr)
    norm = model.get_layer("encoder_norm")
    out["Transformer/encoder_norm/scale"], out["Transformer/encoder_norm/bias"] = norm.gamma, norm.beta
    for name in ("pre_logits", "head"):
        layer = _layer(model, name)
        if layer is not None:
            out[f"{name}/kernel"], out[f"{name}/bias"] = layer.kernel, layer.bias
    return out


def model_params(model):
    """A keras_vit model's weights as an official-layout dict of NumPy arrays (e.g. to write an .npz)."""
    return {key: keras.ops.convert_to_numpy(var) for key, var in model_variables(model).items()}


def _mismatch(key, expected, found, hint=""):
    return ValueError(
        "The checkpoint does not match the model's architecture: "
        f"tensor {key!r} expected shape {expected}, found {found}.{hint}"
    )


def _resampled_posemb(model, params, info, method):
    layer = model.get_layer("posembed_input")
    posemb = params[POSEMB]
    source_prefix = 1 if "cls" in params else 0
    try:
        grid = infer_grid(posemb.shape[1] - source_prefix, info.get("grid") or layer.grid_size)
    except ValueError as error:
        raise ValueError(
            f"{error} (A .weights.h5 file does not record its grid; save the source model as .keras, "
            "which does, or build the model at the source's image size.)"
        ) from None
    if layer.num_prefix_tokens < source_prefix:
        posemb = posemb[:, source_prefix:]
    elif layer.num_prefix_tokens > source_prefix:
        posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
    return resample_position_embedding(
        posemb, layer.grid_size, num_prefix_tokens=layer.num_prefix_tokens, method=method, old_grid=grid
    )


def check_and_match(model, params, info, resample="official", skip_mismatched_head=True):
    """Returns `(values, report)`: the arrays to assign per official key, after every check.

    Raises a ValueError naming the first tensor that does not fit, before
    anything is assigned.
    """
    if resample not in RESAMPLE_METHODS:
        raise ValueError(f"`resample` must be one of {RESAMPLE_METHODS}. Received: resample={resample!r}")
    targets = model_variables(model)
    blocks = [l for l in model.layers if isinstance(l, vit_layers.TransformerBlock)]
    if blocks and info.get("format") in ("timm", "hf"):
        params = converters.regroup_heads(params, blocks[0].num_heads) if _heads_fit(params, blocks[0]) else params
    if (info.get("format") == "keras" and "pre_logits/kernel" in targets and "head/kernel" not in targets
            and "pre_logits/kernel" not in params and "head/kernel" in params):
        # A keras weights file names layers by class: its only Dense is pre_logits here.
        params = {k.replace("head/", "pre_logits/"): v for k, v in params.items()}
    values, report = {}, {"loaded": [], "skipped": [], "resampled": None}
    head_skipped = False
    for key, variable in targets.items():
        expected = tuple(variable.shape)
        if key not in params:
            if key.startswith("head/"):
                head_skipped = True
                report["skipped"].append(key)
                continue
            raise ValueError(
                f"The checkpoint has no tensor {key!r} (expected shape {expected}): it is not a checkpoint of "
                + ("this hybrid: the model has a ResNet stem, the checkpoint none or a shallower one."
                   if converters.is_resnet_key(key) else
                   "this architecture (another classifier, pre_logits or depth?).")
            )
        found = tuple(params[key].shape)
        if found == expected:
            values[key] = params[key]
        elif key == POSEMB:
            values[key] = _resampled_posemb(model, params, info, resample)
            if values[key].shape != expected:
                raise _mismatch(key, expected, found, " The token width differs: another variant?")
            report["resampled"] = (found, expected, resample)
        elif key.startswith("head/") and skip_mismatched_head and found[:-1] == expected[:-1]:
            head_skipped = True
            report["skipped"].append(key)
        else:
            hint = ""
            if key.startswith("head/"):
                hint = " (The head's input width differs; with another number of classes use skip_mismatched_head.)"
            elif key.startswith("embedding/") and "conv_root/kernel" in params and "conv_root/kernel" not in targets:
                hint = " The checkpoint is a ResNet hybrid: build the model with `resnet=` (e.g. keras_vit.ViT_R50_B16)."
            elif converters.is_resnet_key(key) or (key.startswith("embedding/") and "conv_root/kernel" in targets):
                hint = " Is it a checkpoint of another hybrid (ResNet stages or width)?"
            elif key.startswith("embedding/") or "encoderblock" in key:
                hint = " Is it a checkpoint of another ViT variant?"
            raise _mismatch(key, expected, found, hint)
    model_has_head = "head/kernel" in targets
    for key in params:
        if key in targets or key == "cls" or (key.startswith("head/") and not model_has_head):
            continue
        # pre_logits only feeds the head: without the checkpoint's head it is not needed.
        if key.startswith("pre_logits/") and (not model_has_head or head_skipped):
            continue
        raise ValueError(
            f"The checkpoint has a tensor the model lacks: {key!r} with shape {tuple(params[key].shape)}. "
            + ("The checkpoint is deeper than the model: another variant?" if "encoderblock_" in key else
               "The checkpoint has a deeper ResNet stem than the model: another hybrid?" if converters.is_resnet_key(key) else
               "Build the model with `representation_size` set to load pre_logits." if key.startswith("pre_logits")
               else "Another architecture?")
        )
    if head_skipped:
        report["skipped"] = sorted(set(report["skipped"]) | {k for k in targets if k.startswith("head/")})
        values = {k: v for k, v in values.items() if not k.startswith("head/")}
    report["loaded"] = sorted(values)
    return values, report


def _heads_fit(params, block):
    kernel = params.get(f"Transformer/encoderblock_0/{ATTN}query/kernel")
    return kernel is not None and kernel.shape[0] % block.num_heads == 0


def _set_numerics(model, info):
    """Gives the model the GELU and LayerNorm epsilon the checkpoint was trained with."""
    changed = []
    gelu, epsilon = info.get("gelu_approximate"), info.get("layer_norm_epsilon")
    for layer in model.layers:
        if isinstance(layer, vit_layers.TransformerBlock):
            if gelu is not None and layer.gelu_approximate != gelu:
                layer.gelu_approximate = gelu
                changed.append(f"{layer.name}.gelu_approximate={gelu}")
            if epsilon is not None and layer.layer_norm_epsilon != epsilon:
                layer.layer_norm_epsilon = epsilon
                layer.attention_norm.epsilon = layer.mlp_norm.epsilon = epsilon
                changed.append(f"{layer.name}.layer_norm_epsilon={epsilon}")
        elif isinstance(layer, keras.layers.LayerNormalization) and epsilon is not None and layer.epsilon != epsilon:
            layer.epsilon = epsilon
            changed.append(f"{layer.name}.epsilon={epsilon}")
    if changed:
        # Compiled functions captured the old values; let Keras trace them again.
        model.predict_function = model.test_function = model.train_function = None
    return changed


def load_weights(model, source, resample="official", skip_mismatched_head=True):
    """Loads pretrained weights into a model built by keras_vit.

    Every tensor is checked against the architecture before anything is
    assigned. A checkpoint of another image size gets its position
    embeddings resized; a head of another number of classes is skipped (it
    keeps its initialisation: the fine-tuning case); the GELU flavour and
    LayerNorm epsilon of the source are set on the model.

    Args:
        model: a model built by `keras_vit.ViT` or a named constructor.
        source: a catalogue name (`keras_vit.checkpoints.list_weights()`),
            `"imagenet"` / `"imagenet21k"` (for the model's variant), or the
            path to an official `.npz` (also `opt/target/` and big_vision
            `params/` layouts), a timm or Hugging Face `.safetensors`, or a
            keras_vit `.weights.h5` / `.keras` file of any image size.
        resample: `"official"` (bilinear, corner-aligned) or `"bicubic"`
            (timm's) resizing of position embeddings. Defaults to
            `"official"`.
        skip_mismatched_head: bool, skip a head whose number of classes
            differs instead of raising. Defaults to `True`.

    Returns:
        A dict: `loaded` and `skipped` official tensor names, `resampled`
        (`(old_shape, new_shape, method)` or `None`), `numerics` (GELU
        and epsilon changes made to the model) and `not_in_layout`: paths of
        model weights the official layout has no place for (2-D learned and
        relative position embeddings), which keep their values (a warning
        is logged).

    Example:

    >>> small = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), classes=10)
    >>> small.save_weights("/tmp/keras_vit_doctest.weights.h5")
    >>> big = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(48, 48, 3), classes=5)
    >>> report = keras_vit.load_weights(big, "/tmp/keras_vit_doctest.weights.h5")
    >>> report["resampled"][:2], report["skipped"]
    (((1, 17, 32), (1, 37, 32)), ['head/bias', 'head/kernel'])
    """
    path = _local_path(model, source)
    params, info = converters.read_checkpoint(path)
    values, report = check_and_match(model, params, info, resample, skip_mismatched_head)
    targets = model_variables(model)
    for key, value in values.items():
        targets[key].assign(np.asarray(value).astype(keras.backend.standardize_dtype(targets[key].dtype)))
    report["numerics"] = _set_numerics(model, info)
    report["source"] = path
    covered = {id(variable) for variable in targets.values()}
    report["not_in_layout"] = [w.path for w in model.weights if id(w) not in covered]
    if report["not_in_layout"]:
        log.warning("keras_vit.load_weights(%s): the checkpoint layout has no place for %s; they keep their "
                    "values", path, report["not_in_layout"])
    if report["skipped"] or report["resampled"]:
        log.info("keras_vit.load_weights(%s): skipped %s, resampled %s", path, report["skipped"], report["resampled"])
    return report


def _local_path(model, source):
    if checkpoints.is_catalogue_name(source):
        row = model_architecture(model)
        size = model.get_layer("posembed_input").grid_size[0] * row["patch_size"] * resnet_stride(row["resnet"])
        entry = checkpoints.get_entry(source, checkpoints.variant_of(row), size)
        return download.fetch(entry, validate=converters.npz_keys)
    path = os.fspath(source)
    converters.checkpoint_format(path)
    if not os.path.isfile(path):
        raise ValueError(f"The weights file does not exist. Received: weights={path!r}")
    return path


def model_architecture(model):
    """A built model's `keras_vit.ViT` architecture arguments, as `cli_convert.architecture` reads them off a file."""
    blocks = [l for l in model.layers if isinstance(l, vit_layers.TransformerBlock)]
    embedding, stem = model.get_layer("embedding"), _layer(model, "resnet")
    return {
        "num_layers": len(blocks), "hidden_size": embedding.hidden_size, "mlp_dim": blocks[0].mlp_dim if blocks else None,
        "num_heads": blocks[0].num_heads if blocks else None, "patch_size": embedding.patch_size,
        "resnet": {"num_layers": stem.num_layers, "width": stem.width} if stem is not None else None,
    }


# --- the `weights=` argument of keras_vit.ViT ------------------------------------------------------


def plan_weights(weights, row, include_top, classes, input_shape):
    """First step of `ViT(weights=...)`: name checks only, no file access.

    Returns None or a dict with `entry` (catalogue) or `path`, and
    `default_size`.
    """
    if weights is None:
        return None
    name = os.fspath(weights)
    if checkpoints.is_catalogue_name(name):
        size = None
        if input_shape is not None and len(input_shape) == 3 and input_shape[0] == input_shape[1]:
            size = input_shape[0]
        entry = checkpoints.get_entry(name, checkpoints.variant_of(row), size)
        if include_top and classes != entry["classes"]:
            raise ValueError(
                f'If using `weights="{name}"` with `include_top=True`, `classes` should be '
                f"{entry['classes']}. Received: classes={classes}"
            )
        return {"entry": entry, "path": None, "default_size": entry["image_size"]}
    if not name.endswith(converters.SUFFIXES):
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), `'imagenet'`, "
            "`'imagenet21k'`, a catalogue name (keras_vit.checkpoints.list_weights()), or the path to a "
            f"{', '.join(converters.SUFFIXES)} file. Received: weights={name!r}"
        )
    return {"entry": None, "path": name, "default_size": None}


def weights_overrides(plan):
    """Second step (after the input shape is checked): what the model must be built with."""
    if plan is None:
        return {}
    entry = plan["entry"]
    if entry is not None:
        return {
            "gelu_approximate": entry["gelu_approximate"], "layer_norm_epsilon": entry["layer_norm_epsilon"],
            "representation_size": entry["representation_size"],
        }
    path = plan["path"]
    if not os.path.isfile(path):
        raise ValueError(f"The weights file does not exist. Received: weights={path!r}")
    kind = converters.checkpoint_format(path)
    if kind == "npz":
        out = {"gelu_approximate": True, "layer_norm_epsilon": 1e-6}
        keys = converters.npz_keys(path)
        pre = next((k for k in keys if k.endswith("pre_logits/kernel")), None)
        if pre is not None:
            with np.load(path, allow_pickle=False) as data:
                out["representation_size"] = int(data[pre].shape[-1])
        return out
    if kind == "safetensors":
        from safetensors import safe_open

        try:
            with safe_open(path, "np") as handle:
                keys = list(handle.keys())
        except Exception as error:
            raise CheckpointError(f"Not a readable .safetensors file ({error}). Received: {path!r}") from error
        hf = any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in keys)
        return {"gelu_approximate": False, "layer_norm_epsilon": 1e-12 if hf else 1e-6}
    return {}


def load_planned(model, plan):
    """Last step: fetch (catalogue) or read (path) and load."""
    if plan["entry"] is not None:
        path = download.fetch(plan["entry"], validate=converters.npz_keys)
    else:
        path = plan["path"]
    return load_weights(model, path)
