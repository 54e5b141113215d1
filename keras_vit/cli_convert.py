"""`keras-vit convert`: any ViT checkpoint -> Keras weights or a full `.keras` model.

    keras-vit convert ViT-B_16.npz vit_b16.weights.h5 --variant B/16
    keras-vit convert model.safetensors vit_s16_384.keras --image_size 384
    keras-vit convert vit_b16_augreg_in21k_ft_in1k_384 b16_384.keras
    keras-vit convert --list              # the catalogue, as a markdown table

SOURCE is an official `.npz`, a timm or Hugging Face `.safetensors`, a
keras_vit `.weights.h5`/`.keras`, or a catalogue name (downloaded and cached).
The variant, image size, classes and pre_logits width are read from the
checkpoint unless given; another image size resizes the position embeddings.
The output is written under a temporary name and renamed when complete.
"""

import os
import re
import sys

from absl import flags

from keras_vit import atomic, checkpoints, converters, download
from keras_vit.converters import POSEMB


def _define(values):
    flags.DEFINE_string("variant", None, "ViT variant, e.g. B/16 (default: read from the checkpoint).", flag_values=values)
    flags.DEFINE_integer("image_size", None, "Input height and width (default: the checkpoint's).", flag_values=values)
    flags.DEFINE_integer("classes", None, "Classes of the head (default: the checkpoint's; another number "
                         "gives a fresh zero head).", flag_values=values)
    flags.DEFINE_bool("include_top", None, "Keep the classification head (default: if the checkpoint has one).",
                      flag_values=values)
    flags.DEFINE_enum("resample", "official", ["official", "bicubic"],
                      "Position-embedding resizing for another image size.", flag_values=values)
    flags.DEFINE_bool("list", False, "Print the weights catalogue as a markdown table and exit.", flag_values=values)


def catalogue_markdown():
    """The catalogue as the markdown table of weights/README.md."""
    lines = [
        "| name | variant | size | classes | pre_logits | MB | description |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in checkpoints.list_weights():
        lines.append(
            f"| [`{e['name']}`]({e['url']}) | {e['variant']} | {e['image_size']} | {e['classes']:,} | "
            f"{e['representation_size'] or '-'} | {e['size'] / 1e6:.0f} | {e['description']} |"
        )
    return "\n".join(lines) + "\n"


def _resnet_of(params):
    """The ResNet stem of a hybrid checkpoint in `resnet_config` form, or None."""
    if "conv_root/kernel" not in params:
        return None
    units = {}
    for match in filter(None, (re.match(r"block(\d+)/unit(\d+)/", k) for k in params)):
        units[int(match[1])] = max(units.get(int(match[1]), 0), int(match[2]))
    return {"num_layers": tuple(units[s] for s in sorted(units)), "width": params["conv_root/kernel"].shape[-1]}


def architecture(params):
    """Reads the `keras_vit.ViT` architecture arguments off an official-layout dict.

    Returns:
        A dict of `num_layers`, `hidden_size`, `mlp_dim`, `num_heads`,
        `patch_size` and `resnet` (None for a plain ViT); `num_heads` is None
        when the dict holds no attention kernels.
    """
    kernel = params["embedding/kernel"]
    block = "Transformer/encoderblock_0/"
    query = params.get(block + "MultiHeadDotProductAttention_1/query/kernel")
    return dict(
        num_layers=len({k.split("/")[1] for k in params if k.startswith("Transformer/encoderblock_")}),
        hidden_size=kernel.shape[-1],
        mlp_dim=params[block + "MlpBlock_3/Dense_0/kernel"].shape[-1],
        num_heads=None if query is None else query.shape[1],
        patch_size=kernel.shape[0],
        resnet=_resnet_of(params),
    )


def describe(params, variant=None):
    """Reads variant, image size, classes and pre_logits width off an official-layout dict."""
    from keras_vit.variants import HYBRID_VARIANTS, VARIANTS, canonical_name, resnet_config, resnet_stride

    arch = architecture(params)
    depth, width, mlp, patch, resnet = (arch[k] for k in ("num_layers", "hidden_size", "mlp_dim", "patch_size", "resnet"))
    if variant is None:
        table = HYBRID_VARIANTS if resnet else VARIANTS
        found = [name for name, row in table.items()
                 if (row["num_layers"], row["hidden_size"], row["mlp_dim"], row["patch_size"]) == (depth, width, mlp, patch)
                 and resnet_config(row.get("resnet")) == resnet]
        if not found:
            raise ValueError(
                f"The checkpoint (depth {depth}, width {width}, MLP {mlp}, patch {patch}, ResNet {resnet}) is none of "
                f"the paper's variants {list(table)}; convert it with keras_vit.ViT in Python instead."
            )
        variant = found[0]
    variant = canonical_name(variant)
    prefix = 1 if "cls" in params else 0
    pixels_per_patch = patch * resnet_stride(resnet)
    side = int(round((params[POSEMB].shape[1] - prefix) ** 0.5)) if POSEMB in params else 224 // pixels_per_patch
    return {
        "variant": variant,
        "image_size": side * pixels_per_patch,
        "classes": params["head/kernel"].shape[-1] if "head/kernel" in params else None,
        "representation_size": params["pre_logits/kernel"].shape[-1] if "pre_logits/kernel" in params else None,
    }


def convert(source, output, variant=None, image_size=None, classes=None, include_top=None, resample="official"):
    """Converts `source` (path or catalogue name) into `output` (`.weights.h5` or `.keras`).

    Returns:
        `(model, report)`: the converted model and `load_weights`' report.
    """
    from keras_vit.loading import load_weights
    from keras_vit.model import ViT
    from keras_vit.variants import constructor_name, get_variant

    output = os.fspath(output)
    if not output.endswith((".weights.h5", ".keras")):
        raise ValueError(f"OUTPUT must end with .weights.h5 or .keras. Received: {output!r}")
    path = source
    if checkpoints.is_catalogue_name(source):
        if source in ("imagenet", "imagenet21k"):
            entry = checkpoints.get_entry(source, variant and checkpoints.variant_of(get_variant(variant)), image_size)
        else:
            entry = checkpoints.get_entry(source)
        path = download.fetch(entry, validate=converters.npz_keys)
    params, info = converters.read_checkpoint(path)
    found = describe(params, variant)
    include_top = found["classes"] is not None if include_top is None else include_top
    size = image_size or found["image_size"]
    model = ViT(
        **get_variant(found["variant"]),
        input_shape=(size, size, 3),
        include_top=include_top,
        classes=classes or found["classes"] or 1000,
        pooling=None if include_top else "token" if "cls" in params else "avg",
        representation_size=found["representation_size"],
        gelu_approximate=info["gelu_approximate"],
        layer_norm_epsilon=info["layer_norm_epsilon"] or 1e-6,
        classifier="token" if "cls" in params else "gap",
        name=constructor_name(found["variant"]).lower(),
    )
    report = load_weights(model, path, resample=resample)
    atomic.write_with(output, model.save_weights if output.endswith(".weights.h5") else model.save)
    return model, report


def main(argv):
    """`keras-vit convert SOURCE OUTPUT [--variant B/16] [--image_size 384] ...`"""
    from keras_vit.cli import parse_flags

    values, rest = parse_flags(argv, _define, "SOURCE OUTPUT.weights.h5|OUTPUT.keras [--variant B/16] [--image_size 384] | --list")
    rest = [argv[0]] + rest
    if values.list:
        print(catalogue_markdown(), end="")
        return 0
    if len(rest) != 3:
        print("usage: keras-vit convert SOURCE OUTPUT.weights.h5|OUTPUT.keras [--variant B/16] [--image_size 384] "
              "[--classes N] [--noinclude_top] [--resample official|bicubic] | --list", file=sys.stderr)
        return 2
    source, output = rest[1], rest[2]
    try:
        model, report = convert(source, output, values.variant, values.image_size, values.classes,
                                values.include_top, values.resample)
    except (ValueError, OSError) as error:
        print(f"keras-vit convert: {error}", file=sys.stderr)
        return 1
    print(f"wrote {output}: {model.name}, input {model.input_shape[1:]}, output {model.output_shape[1:]}, "
          f"{model.count_params():,} parameters")
    if report["resampled"]:
        old, new, method = report["resampled"]
        print(f"position embeddings resized {old} -> {new} ({method})")
    if report["skipped"]:
        print(f"not loaded (kept their initialisation): {', '.join(report['skipped'])}")
    return 0
