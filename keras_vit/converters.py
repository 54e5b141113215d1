"""Readers that turn any ViT checkpoint into one layout: the official one.

Every source (official `.npz` in its vision_transformer, `opt/target/` and
big_vision `params/` forms; timm and Hugging Face `.safetensors`; a keras_vit
`.weights.h5` or `.keras`) becomes a flat dict keyed like the official files
(`embedding/kernel`, `Transformer/encoderblock_0/LayerNorm_0/scale`, ...) with
arrays in the official shapes, plus a small dict of facts about the source
(GELU flavour, LayerNorm epsilon, patch grid). `keras_vit.checkpoints` checks
that dict against a model and assigns it. No torch: `numpy.load(allow_pickle=
False)`, `safetensors.numpy` and `h5py` only.
"""

import json
import os
import re
import zipfile

import numpy as np

POSEMB = "Transformer/posembed_input/pos_embedding"
BLOCK = "Transformer/encoderblock_{}/"
ATTN = "MultiHeadDotProductAttention_1/"
SUFFIXES = (".npz", ".safetensors", ".weights.h5", ".keras")
# The ResNet stem of the hybrids: conv_root, gn_root, block{s}/unit{u}/...
_RESNET_KEY = re.compile(r"^(conv_root|gn_root|block\d+/unit\d+)/")
_GROUP_NORM_PARAM = re.compile(r"(^|/)gn(\d+|_root|_proj)/(scale|bias)$")


class CheckpointError(ValueError):
    """A file that is not a ViT checkpoint this package can read."""


def checkpoint_format(path):
    """Returns "npz", "safetensors", "h5" or "keras" from the file name."""
    name = os.fspath(path)
    if name.endswith(".npz"):
        return "npz"
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(".h5"):
        return "h5"
    if name.endswith(".keras"):
        return "keras"
    raise CheckpointError(
        f"Unknown weights file type: expected one of {SUFFIXES}. Received: {name!r}"
    )


def read_checkpoint(path):
    """Reads any supported file. Returns `(params, info)`: official-layout arrays and source facts."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The weights file does not exist. Received: {path!r}")
    kind = checkpoint_format(path)
    reader = {"npz": read_npz, "safetensors": read_safetensors, "h5": read_keras_h5, "keras": read_keras_file}
    return reader[kind](path)


# --- official .npz -----------------------------------------------------------------------------


def _open_npz(path):
    try:
        return np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise CheckpointError(
            f"Not a readable .npz checkpoint (truncated download or another kind of file?): {error}. "
            f"Received: {path!r}"
        ) from error


def npz_keys(path):
    """The array names of an .npz file, read from its zip directory only."""
    with _open_npz(path) as data:
        return list(data.files)


def read_npz(path):
    """Official vision_transformer / AugReg / `opt/target/` / big_vision `params/` files."""
    raw = {}
    with _open_npz(path) as data:
        for key in data.files:
            if key.startswith("opt/") and not key.startswith("opt/target/"):
                continue  # optimizer state in old training checkpoints
            try:
                raw[key] = data[key]
            except ValueError as error:  # object arrays need pickle, which we never allow
                raise CheckpointError(
                    f"The .npz holds pickled objects (array {key!r}), which are never loaded for safety; "
                    f"a ViT checkpoint holds plain float arrays. Received: {path!r}"
                ) from error
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                raise CheckpointError(f"Truncated or corrupt .npz ({error}). Received: {path!r}") from error
    return official_from_flax(raw, path), {"format": "npz", "gelu_approximate": True, "layer_norm_epsilon": 1e-6}


def official_from_flax(raw, source="checkpoint"):
    """Folds prefixes and big_vision names into the official layout (a pure function)."""
    params = {}
    for key, value in raw.items():
        for prefix in ("opt/target/", "params/"):
            if key.startswith(prefix):
                key = key[len(prefix):]
        params[key] = np.asarray(value)
    if not any(k.startswith(("embedding/", "Transformer/")) for k in params):
        raise CheckpointError(
            "Not a ViT checkpoint: no 'embedding/...' or 'Transformer/...' arrays. "
            f"Found: {sorted(params)[:5]}. Received: {source!r}"
        )
    # big_vision's scanned encoder stacks the blocks on a leading axis.
    stacked = [k for k in params if k.startswith("Transformer/encoderblock/")]
    for key in stacked:
        value = params.pop(key)
        rest = key[len("Transformer/encoderblock/"):]
        for i in range(value.shape[0]):
            params[BLOCK.format(i) + rest] = value[i]
    for key in [k for k in params if _GROUP_NORM_PARAM.search(k) and params[k].ndim > 1]:
        # Files written by older Flax hold GroupNorm scale/bias as (1, 1, 1, C)
        # (google/flax#1721); the official loader squeezes them the same way.
        params[key] = params[key].reshape(-1)
    if any("MultiHeadDotProductAttention_0" in k for k in params):
        renames = {"MultiHeadDotProductAttention_0/": ATTN, "LayerNorm_1/": "LayerNorm_2/", "MlpBlock_0/": "MlpBlock_3/"}
        params = {_rename_block_parts(k, renames): v for k, v in params.items()}
    if "pos_embedding" in params:
        # big_vision adds position embeddings before the class token is prepended:
        # in our layout that is a zero class-token row.
        posemb = params.pop("pos_embedding")
        if "cls" in params:
            posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
        params[POSEMB] = posemb
    return params


def is_resnet_key(key):
    """Whether an official-layout key belongs to the ResNet stem of a hybrid."""
    return bool(_RESNET_KEY.match(key))


def _rename_block_parts(key, renames):
    if not key.startswith("Transformer/encoderblock_"):
        return key
    for old, new in renames.items():
        key = key.replace("/" + old, "/" + new)
    return key


# --- timm and Hugging Face .safetensors ----------------------------------------------------------


def read_safetensors(path):
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError, TypeError) as error:
        raise CheckpointError(f"Not a readable .safetensors file ({error}). Received: {path!r}") from error
    if "patch_embed.proj.weight" in tensors:
        return official_from_timm(tensors), {"format": "timm", "gelu_approximate": False, "layer_norm_epsilon": 1e-6}
    prefix = next((k[: -len("embeddings.patch_embeddings.projection.weight")] for k in tensors
                   if k.endswith("embeddings.patch_embeddings.projection.weight")), None)
    if prefix is not None:
        return official_from_hf(tensors, prefix), {"format": "hf", "gelu_approximate": False, "layer_norm_epsilon": 1e-12}
    raise CheckpointError(
        "Unrecognised .safetensors layout: expected a timm ViT ('patch_embed.proj.weight') or a Hugging Face "
        f"ViT ('vit.embeddings.patch_embeddings.projection.weight'). Found: {sorted(tensors)[:5]}. Received: {path!r}"
    )


def _linear(weight, bias, heads_in=None, heads_out=None):
    """PyTorch Linear (out, in) -> official Dense kernel (in, out), optionally split into heads."""
    kernel = np.asarray(weight, np.float32).T
    bias = np.asarray(bias, np.float32)
    if heads_out is not None:
        kernel = kernel.reshape(kernel.shape[0], heads_out, -1)
        bias = bias.reshape(heads_out, -1)
    if heads_in is not None:
        kernel = kernel.reshape(heads_in, -1, kernel.shape[-1])
    return kernel, bias


def _put(params, key, kernel_bias):
    params[key + "/kernel"], params[key + "/bias"] = kernel_bias


def _norm(params, key, weight, bias):
    params[key + "/scale"] = np.asarray(weight, np.float32)
    params[key + "/bias"] = np.asarray(bias, np.float32)


def _stem(params, conv_weight, conv_bias, cls, posemb):
    params["embedding/kernel"] = np.transpose(np.asarray(conv_weight, np.float32), (2, 3, 1, 0))
    params["embedding/bias"] = np.asarray(conv_bias, np.float32)
    if cls is not None:
        params["cls"] = np.asarray(cls, np.float32)
    params[POSEMB] = np.asarray(posemb, np.float32)


def official_from_timm(t, num_heads=None):
    """timm VisionTransformer state dict -> official layout. Heads are found from the block count rule below."""
    unsupported = [k for k in t if k.startswith(("reg_token", "fc_norm.weight", "attn_pool")) or ".ls1." in k]
    if unsupported:
        raise CheckpointError(
            f"This timm model has parts keras_vit's ViT does not (e.g. {unsupported[0]!r}: register tokens, "
            "layer scale, fc_norm or attention pooling)."
        )
    params = {}
    posemb = t["pos_embed"]
    cls = t.get("cls_token")
    grid_rows = posemb.shape[1] - (1 if cls is not None else 0)
    if cls is not None and int(round(grid_rows**0.5)) ** 2 != grid_rows:
        # timm's no_embed_class models: the class token gets no position embedding.
        posemb = np.concatenate([np.zeros_like(posemb[:, :1]), posemb], axis=1)
    _stem(params, t["patch_embed.proj.weight"], t["patch_embed.proj.bias"], cls, posemb)
    depth = _count_blocks(t, "blocks.")
    for i in range(depth):
        p, b = f"blocks.{i}.", BLOCK.format(i)
        qkv_w, qkv_b = t[p + "attn.qkv.weight"], t[p + "attn.qkv.bias"]
        width = qkv_w.shape[1]
        heads = num_heads or _guess_heads(width)
        for name, w, bias in zip(("query", "key", "value"), np.split(qkv_w, 3), np.split(qkv_b, 3)):
            _put(params, b + ATTN + name, _linear(w, bias, heads_out=heads))
        _put(params, b + ATTN + "out", _linear(t[p + "attn.proj.weight"], t[p + "attn.proj.bias"], heads_in=heads))
        _norm(params, b + "LayerNorm_0", t[p + "norm1.weight"], t[p + "norm1.bias"])
        _norm(params, b + "LayerNorm_2", t[p + "norm2.weight"], t[p + "norm2.bias"])
        _put(params, b + "MlpBlock_3/Dense_0", _linear(t[p + "mlp.fc1.weight"], t[p + "mlp.fc1.bias"]))
        _put(params, b + "MlpBlock_3/Dense_1", _linear(t[p + "mlp.fc2.weight"], t[p + "mlp.fc2.bias"]))
    _norm(params, "Transformer/encoder_norm", t["norm.weight"], t["norm.bias"])
    if "head.weight" in t:
        _put(params, "head", _linear(t["head.weight"], t["head.bias"]))
    return params


# Hugging Face names per block: the classic checkpoints on the Hub, and the
# names newer transformers releases write (`layers.{i}.attention.q_proj`, ...).
_HF_NAMES = {
    "classic": ("encoder.layer.", {"query": "attention.attention.query", "key": "attention.attention.key",
                                   "value": "attention.attention.value", "out": "attention.output.dense",
                                   "fc1": "intermediate.dense", "fc2": "output.dense"}),
    "v5": ("layers.", {"query": "attention.q_proj", "key": "attention.k_proj", "value": "attention.v_proj",
                       "out": "attention.o_proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2"}),
}


def official_from_hf(t, prefix="vit."):
    """Hugging Face ViTModel / ViTForImageClassification state dict -> official layout."""
    e = prefix + "embeddings."
    params = {}
    _stem(params, t[e + "patch_embeddings.projection.weight"], t[e + "patch_embeddings.projection.bias"],
          t.get(e + "cls_token"), t[e + "position_embeddings"])
    style = "v5" if _count_blocks(t, prefix + "layers.") else "classic"
    block_prefix, names = _HF_NAMES[style]
    for i in range(_count_blocks(t, prefix + block_prefix)):
        p, b = f"{prefix}{block_prefix}{i}.", BLOCK.format(i)

        def linear(part, **heads):
            return _linear(t[f"{p}{names[part]}.weight"], t[f"{p}{names[part]}.bias"], **heads)

        n_heads = _guess_heads(t[f"{p}{names['query']}.weight"].shape[1])
        for name in ("query", "key", "value"):
            _put(params, b + ATTN + name, linear(name, heads_out=n_heads))
        _put(params, b + ATTN + "out", linear("out", heads_in=n_heads))
        _norm(params, b + "LayerNorm_0", t[p + "layernorm_before.weight"], t[p + "layernorm_before.bias"])
        _norm(params, b + "LayerNorm_2", t[p + "layernorm_after.weight"], t[p + "layernorm_after.bias"])
        _put(params, b + "MlpBlock_3/Dense_0", linear("fc1"))
        _put(params, b + "MlpBlock_3/Dense_1", linear("fc2"))
    _norm(params, "Transformer/encoder_norm", t[prefix + "layernorm.weight"], t[prefix + "layernorm.bias"])
    for key in ("pooler.dense.", prefix + "pooler.dense."):
        if key + "weight" in t:  # ViTModel's pooler is the Dense + tanh of pre_logits
            _put(params, "pre_logits", _linear(t[key + "weight"], t[key + "bias"]))
    if "classifier.weight" in t:
        _put(params, "head", _linear(t["classifier.weight"], t["classifier.bias"]))
    return params


def _count_blocks(tensors, prefix):
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in tensors for m in [pattern.match(k)] if m}
    return max(indices) + 1 if indices else 0


# Fused or flat PyTorch projections do not record the head count, and any divisor
# of the width gives the same numbers: only the (H, Dh) split of the kernels
# changes. The official widths use 64-wide heads, so split by that; the split is
# checked (and redone) against the model in `regroup_heads`.
def _guess_heads(width):
    return width // 64 if width % 64 == 0 and width >= 64 else 1


def regroup_heads(params, num_heads):
    """Reshapes q/k/v/out kernels and biases to `num_heads` heads (values unchanged)."""
    out = {}
    for key, value in params.items():
        if f"/{ATTN}" not in "/" + key:
            out[key] = value
            continue
        part = key.split(ATTN)[1]
        if part.startswith("out/kernel"):
            value = value.reshape(num_heads, -1, value.shape[-1])
        elif part.endswith("/kernel"):
            value = value.reshape(value.shape[0], num_heads, -1)
        elif part.endswith("/bias") and not part.startswith("out/"):
            value = value.reshape(num_heads, -1)
        out[key] = value
    return out


# --- keras_vit .weights.h5 and .keras ------------------------------------------------------------

# Keras' weights file names each layer after its class (snake case, numbered in
# model order), and sublayers after their attributes.
_H5_BLOCK = {
    "attention_norm": ("LayerNorm_0", ("scale", "bias")),
    "mlp_norm": ("LayerNorm_2", ("scale", "bias")),
    "attention/query_dense": (ATTN + "query", ("kernel", "bias")),
    "attention/key_dense": (ATTN + "key", ("kernel", "bias")),
    "attention/value_dense": (ATTN + "value", ("kernel", "bias")),
    "attention/output_dense": (ATTN + "out", ("kernel", "bias")),
    "mlp_dense_0": ("MlpBlock_3/Dense_0", ("kernel", "bias")),
    "mlp_dense_1": ("MlpBlock_3/Dense_1", ("kernel", "bias")),
}


def _numbered(name, base):
    if name == base:
        return 0
    match = re.fullmatch(re.escape(base) + r"_(\d+)", name)
    return int(match.group(1)) if match else None


def official_from_keras_h5(h5):
    """A keras_vit model's weights file (an open `h5py.File`) -> official layout."""
    if "layers" not in h5:
        raise CheckpointError("Not a Keras 3 weights file (no 'layers' group).")
    layers = h5["layers"]
    params, dense = {}, []

    def var(group, i):
        return np.asarray(group["vars"][str(i)], np.float32)

    for name in layers:
        group = layers[name]
        if name == "patch_encoder":
            params["embedding/kernel"], params["embedding/bias"] = var(group["projection"], 0), var(group["projection"], 1)
        elif name == "add_class_token":
            params["cls"] = var(group, 0)
        elif name == "add_position_embedding" and len(group["vars"]):
            params[POSEMB] = var(group, 0)
        elif name == "layer_normalization":
            params["Transformer/encoder_norm/scale"], params["Transformer/encoder_norm/bias"] = var(group, 0), var(group, 1)
        elif _numbered(name, "transformer_block") is not None:
            b = BLOCK.format(_numbered(name, "transformer_block"))
            for path, (key, names) in _H5_BLOCK.items():
                sub = group[path]
                for i, leaf in enumerate(names):
                    params[b + key + "/" + leaf] = var(sub, i)
        elif _numbered(name, "dense") is not None:
            dense.append((_numbered(name, "dense"), var(group, 0), var(group, 1)))
        elif name == "res_net_stem":
            params.update(_official_from_keras_stem(group, var))
    dense.sort(key=lambda item: item[0])
    # The head is the last Dense; a Dense before it is pre_logits.
    for key, (_, kernel, bias) in zip(["pre_logits", "head"][2 - len(dense):] if len(dense) <= 2 else [], dense):
        params[key + "/kernel"], params[key + "/bias"] = kernel, bias
    if "embedding/kernel" not in params:
        raise CheckpointError("Not the weights of a keras_vit model (no patch_encoder layer).")
    return params


def _official_from_keras_stem(group, var):
    """The ResNetStem of a hybrid: its units are numbered in order, and each stage starts with a projection."""
    params = {"conv_root/kernel": var(group["conv_root"], 0)}
    params["gn_root/scale"], params["gn_root/bias"] = var(group["gn_root"], 0), var(group["gn_root"], 1)
    units, stage, unit = group["residual_units"] if "residual_units" in group else {}, 0, 0
    for name in sorted(units, key=lambda n: _numbered(n, "bottleneck_unit")):
        stage, unit = (stage + 1, 1) if "conv_proj" in units[name] else (stage, unit + 1)
        for part in set(units[name]) - {"vars"}:  # conv1..3, conv_proj: kernel; gn1..3, gn_proj: scale, bias
            for i, leaf in enumerate(("kernel",) if part.startswith("conv") else ("scale", "bias")):
                params[f"block{stage}/unit{unit}/{part}/{leaf}"] = var(units[name][part], i)
    return params


def read_keras_h5(path):
    import h5py

    try:
        with h5py.File(path, "r") as h5:
            params = official_from_keras_h5(h5)
    except OSError as error:
        raise CheckpointError(f"Not a readable .weights.h5 file ({error}). Received: {path!r}") from error
    except CheckpointError as error:
        raise CheckpointError(f"{error} Received: {path!r}") from None
    return params, {"format": "keras", "gelu_approximate": None, "layer_norm_epsilon": None}


def read_keras_file(path):
    """A `.keras` zip: the weights plus, from its config, the grid, GELU and epsilon."""
    import h5py

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            with archive.open("model.weights.h5") as handle, h5py.File(handle, "r") as h5:
                params = official_from_keras_h5(h5)
    except (zipfile.BadZipFile, KeyError, OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Not a readable .keras model file ({error}). Received: {path!r}") from error
    except CheckpointError as error:
        raise CheckpointError(f"{error} Received: {path!r}") from None
    info = {"format": "keras", "gelu_approximate": None, "layer_norm_epsilon": None}
    for layer in config.get("config", {}).get("layers", []):
        cfg = layer.get("config", {})
        if layer.get("class_name") == "AddPositionEmbedding":
            info["grid"] = tuple(cfg["grid_size"])
        if layer.get("class_name") == "TransformerBlock":
            info["gelu_approximate"] = cfg.get("gelu_approximate")
            info["layer_norm_epsilon"] = cfg.get("layer_norm_epsilon")
    return params, info
