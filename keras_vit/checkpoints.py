"""Pretrained ViT weights: the catalogue (pure data) and the one loading call.

The catalogue lists the public checkpoints of "An Image is Worth 16x16 Words"
(Dosovitskiy et al., 2021, https://arxiv.org/abs/2010.11929) and of "How to
train your ViT?" (AugReg, Steiner et al., 2021,
https://arxiv.org/abs/2106.10270), all official `.npz` files served from
`https://storage.googleapis.com/vit_models/`. `weights/README.md` renders it
as a table. `load_weights(model, source)` loads a catalogue entry or any
`.npz`, timm/Hugging Face `.safetensors`, `.weights.h5` or `.keras` file into a
keras_vit model: it checks every tensor against the architecture first,
resizes position embeddings for another image size and skips a head of
another size.

Sizes are the float32 parameter bytes computed from each file's architecture
(the bucket publishes neither sizes nor hashes); the files add < 1% of
headers. The sha256 is recorded on first download and checked after.
"""

import os
import urllib.parse

from keras_vit.converters import CheckpointError  # noqa: F401  (public)
from keras_vit.resample import RESAMPLE_METHODS, resample_position_embedding  # noqa: F401  (public)
from keras_vit.variants import HYBRID_VARIANTS, VARIANTS, resnet_config

BUCKET = "https://storage.googleapis.com/vit_models/"

# (name, variant, image size, classes, path in the bucket, representation_size
#  (pre_logits width) or None, expected bytes, description). All official files
#  were trained with the tanh GELU and LayerNorm epsilon 1e-6.
_ROWS = [
    ('vit_ti16_augreg_in21k', 'Ti/16', 224, 21843, 'augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0.npz', None, 38960460, 'AugReg: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_ti16_augreg_in21k_ft_in1k_224', 'Ti/16', 224, 1000, 'augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz', None, 22869664, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 224'),
    ('vit_ti16_augreg_in21k_ft_in1k_384', 'Ti/16', 384, 1000, 'augreg/Ti_16-i21k-300ep-lr_0.001-aug_none-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz', None, 23161504, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 384'),
    ('vit_s16_augreg_in1k_224', 'S/16', 224, 1000, 'augreg/S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz', None, 88202656, 'AugReg: ImageNet-1k only (300 ep), fine-tuned at 224'),
    ('vit_s16_augreg_in1k_384', 'S/16', 384, 1000, 'augreg/S_16-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz', None, 88786336, 'AugReg: ImageNet-1k only (300 ep), fine-tuned at 384'),
    ('vit_s16_augreg_in21k', 'S/16', 224, 21843, 'augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz', None, 120300876, 'AugReg: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_s16_augreg_in21k_ft_in1k_224', 'S/16', 224, 1000, 'augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz', None, 88202656, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 224'),
    ('vit_s16_augreg_in21k_ft_in1k_384', 'S/16', 384, 1000, 'augreg/S_16-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz', None, 88786336, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 384'),
    ('vit_s32_augreg_in21k', 'S/32', 224, 21843, 'augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0.npz', None, 123614028, 'AugReg: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_s32_augreg_in21k_ft_in1k_224', 'S/32', 224, 1000, 'augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz', None, 91515808, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 224'),
    ('vit_s32_augreg_in21k_ft_in1k_384', 'S/32', 384, 1000, 'augreg/S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz', None, 91661728, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 384'),
    ('vit_b8_augreg_in21k', 'B/8', 224, 21843, 'augreg/B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz', None, 410420556, 'AugReg: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_b8_augreg_in21k_ft_in1k_224', 'B/8', 224, 1000, 'augreg/B_8-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz', None, 346307488, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 224'),
    ('vit_b8_in21k', 'B/8', 224, 21843, 'imagenet21k/ViT-B_8.npz', 768, 412782924, 'Original paper: ImageNet-21k pre-training; pre_logits layer, zero head'),
    ('vit_b16_augreg_in1k_224', 'B/16', 224, 1000, 'augreg/B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz', None, 346270624, 'AugReg: ImageNet-1k only (300 ep), fine-tuned at 224'),
    ('vit_b16_augreg_in1k_384', 'B/16', 384, 1000, 'augreg/B_16-i1k-300ep-lr_0.001-aug_strong2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz', None, 347437984, 'AugReg: ImageNet-1k only (300 ep), fine-tuned at 384'),
    ('vit_b16_augreg_in21k', 'B/16', 224, 21843, 'augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz', None, 410383692, 'AugReg: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_b16_augreg_in21k_ft_in1k_224', 'B/16', 224, 1000, 'augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz', None, 346270624, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 224'),
    ('vit_b16_augreg_in21k_ft_in1k_384', 'B/16', 384, 1000, 'augreg/B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz', None, 347437984, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 384'),
    ('vit_b16_in21k', 'B/16', 224, 21843, 'imagenet21k/ViT-B_16.npz', 768, 412746060, 'Original paper: ImageNet-21k pre-training; pre_logits layer, zero head'),
    ('vit_b16_in21k_ft_in1k_224', 'B/16', 224, 1000, 'imagenet21k+imagenet2012/ViT-B_16-224.npz', None, 346270624, 'Original paper: ImageNet-21k pre-training, ImageNet-1k fine-tune at 224'),
    ('vit_b16_in21k_ft_in1k_384', 'B/16', 384, 1000, 'imagenet21k+imagenet2012/ViT-B_16.npz', None, 347437984, 'Original paper: ImageNet-21k pre-training, ImageNet-1k fine-tune at 384'),
    ('vit_b32_augreg_in1k_224', 'B/32', 224, 1000, 'augreg/B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz', None, 352896928, 'AugReg: ImageNet-1k only (300 ep), fine-tuned at 224'),
    ('vit_b32_augreg_in1k_384', 'B/32', 384, 1000, 'augreg/B_32-i1k-300ep-lr_0.001-aug_medium2-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz', None, 353188768, 'AugReg: ImageNet-1k only (300 ep), fine-tuned at 384'),
    ('vit_b32_augreg_in21k', 'B/32', 224, 21843, 'augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0.npz', None, 417009996, 'AugReg: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_b32_augreg_in21k_ft_in1k_224', 'B/32', 224, 1000, 'augreg/B_32-i21k-300ep-lr_0.001-aug_medium1-wd_0.03-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_224.npz', None, 352896928, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 224'),
    ('vit_b32_augreg_in21k_ft_in1k_384', 'B/32', 384, 1000, 'augreg/B_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.03-res_384.npz', None, 353188768, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 384'),
    ('vit_b32_in21k', 'B/32', 224, 21843, 'imagenet21k/ViT-B_32.npz', 768, 419372364, 'Original paper: ImageNet-21k pre-training; pre_logits layer, zero head'),
    ('vit_b32_in21k_ft_in1k_384', 'B/32', 384, 1000, 'imagenet21k+imagenet2012/ViT-B_32.npz', None, 353188768, 'Original paper: ImageNet-21k pre-training, ImageNet-1k fine-tune at 384'),
    ('vit_l16_augreg_in21k', 'L/16', 224, 21843, 'augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1.npz', None, 1302762828, 'AugReg: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_l16_augreg_in21k_ft_in1k_224', 'L/16', 224, 1000, 'augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_224.npz', None, 1217306528, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 224'),
    ('vit_l16_augreg_in21k_ft_in1k_384', 'L/16', 384, 1000, 'augreg/L_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.01-res_384.npz', None, 1218863008, 'AugReg: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 384'),
    ('vit_l16_in21k', 'L/16', 224, 21843, 'imagenet21k/ViT-L_16.npz', 1024, 1306961228, 'Original paper: ImageNet-21k pre-training; pre_logits layer, zero head'),
    ('vit_l16_in21k_ft_in1k_224', 'L/16', 224, 1000, 'imagenet21k+imagenet2012/ViT-L_16-224.npz', None, 1217306528, 'Original paper: ImageNet-21k pre-training, ImageNet-1k fine-tune at 224'),
    ('vit_l16_in21k_ft_in1k_384', 'L/16', 384, 1000, 'imagenet21k+imagenet2012/ViT-L_16.npz', None, 1218863008, 'Original paper: ImageNet-21k pre-training, ImageNet-1k fine-tune at 384'),
    ('vit_l32_in21k', 'L/32', 224, 21843, 'imagenet21k/ViT-L_32.npz', 1024, 1315796300, 'Original paper: ImageNet-21k pre-training; pre_logits layer, zero head'),
    ('vit_l32_in21k_ft_in1k_384', 'L/32', 384, 1000, 'imagenet21k+imagenet2012/ViT-L_32.npz', None, 1226530720, 'Original paper: ImageNet-21k pre-training, ImageNet-1k fine-tune at 384'),
    ('vit_h14_in21k', 'H/14', 224, 21843, 'imagenet21k/ViT-H_14.npz', 1280, 2641541452, 'Original paper: ImageNet-21k pre-training; pre_logits layer, zero head'),
    ('vit_r50_b16_in21k', 'R50+B/16', 224, 21843, 'imagenet21k/R50+ViT-B_16.npz', 768, 461111884, 'Original paper, hybrid: ImageNet-21k pre-training; pre_logits layer, zero head'),
    ('vit_r50_b16_in21k_ft_in1k_384', 'R50+B/16', 384, 1000, 'imagenet21k+imagenet2012/R50+ViT-B_16.npz', None, 395803808, 'Original paper, hybrid: ImageNet-21k pre-training, ImageNet-1k fine-tune at 384'),
    ('vit_r26_s32_augreg_in21k', 'R26+S/32', 224, 21843, 'augreg/R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0.npz', None, 177825868, 'AugReg, hybrid: ImageNet-21k pre-training (300 ep), 21,843-class head'),
    ('vit_r26_s32_augreg_in21k_ft_in1k_224', 'R26+S/32', 224, 1000, 'augreg/R26_S_32-i21k-300ep-lr_0.001-aug_light0-wd_0.03-do_0.1-sd_0.1--imagenet2012-steps_20k-lr_0.03-res_224.npz', None, 145727648, 'AugReg, hybrid: ImageNet-21k pre-training (300 ep, aug light0, dropout 0.1), ImageNet-1k fine-tune at 224'),
    ('vit_r26_s32_augreg_in21k_ft_in1k_384', 'R26+S/32', 384, 1000, 'augreg/R26_S_32-i21k-300ep-lr_0.001-aug_light1-wd_0.1-do_0.0-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz', None, 145873568, 'AugReg, hybrid: ImageNet-21k pre-training (300 ep), ImageNet-1k fine-tune at 384'),
]

WEIGHTS = {
    name: dict(
        name=name, variant=variant, image_size=size, classes=classes,
        # '+' in a bucket folder name must be percent-encoded in the URL.
        url=BUCKET + urllib.parse.quote(path), size=nbytes, sha256=None,
        gelu_approximate=True, layer_norm_epsilon=1e-6, representation_size=rep,
        description=description,
    )
    for name, variant, size, classes, path, rep, nbytes, description in _ROWS
}

# weights="imagenet": the best ImageNet-1k fine-tune of a variant at (224, 384);
# weights="imagenet21k": its ImageNet-21k (21,843 classes) pre-training.
IMAGENET = {
    "Ti/16": ("vit_ti16_augreg_in21k_ft_in1k_224", "vit_ti16_augreg_in21k_ft_in1k_384"),
    "S/16": ("vit_s16_augreg_in21k_ft_in1k_224", "vit_s16_augreg_in21k_ft_in1k_384"),
    "S/32": ("vit_s32_augreg_in21k_ft_in1k_224", "vit_s32_augreg_in21k_ft_in1k_384"),
    "B/8": ("vit_b8_augreg_in21k_ft_in1k_224", None),
    "B/16": ("vit_b16_augreg_in21k_ft_in1k_224", "vit_b16_augreg_in21k_ft_in1k_384"),
    "B/32": ("vit_b32_augreg_in21k_ft_in1k_224", "vit_b32_augreg_in21k_ft_in1k_384"),
    "L/16": ("vit_l16_augreg_in21k_ft_in1k_224", "vit_l16_augreg_in21k_ft_in1k_384"),
    "L/32": (None, "vit_l32_in21k_ft_in1k_384"),
    "H/14": (None, None),
    "R50+B/16": (None, "vit_r50_b16_in21k_ft_in1k_384"),
    "R26+S/32": ("vit_r26_s32_augreg_in21k_ft_in1k_224", "vit_r26_s32_augreg_in21k_ft_in1k_384"),
}
IMAGENET21K = {
    "Ti/16": "vit_ti16_augreg_in21k", "S/16": "vit_s16_augreg_in21k", "S/32": "vit_s32_augreg_in21k",
    "B/8": "vit_b8_augreg_in21k", "B/16": "vit_b16_augreg_in21k", "B/32": "vit_b32_augreg_in21k",
    "L/16": "vit_l16_augreg_in21k", "L/32": "vit_l32_in21k", "H/14": "vit_h14_in21k",
    "R50+B/16": "vit_r50_b16_in21k", "R26+S/32": "vit_r26_s32_augreg_in21k",
}

# Models this project trained itself, kept in the repository's weights/ folder
# (weights/FASHION_MNIST.md says how each was made). Whole `.keras` models with
# their class names beside them (`<file>.labels.txt`); the sha256 is checked on use.
SHIPPED = {
    "vit_fashion_mnist": dict(
        name="vit_fashion_mnist", file="vit_fashion_mnist.keras", dataset="Fashion-MNIST", image_size=56,
        classes=10, parameters=1_041_578, test_accuracy=0.9377,
        sha256="4c17d3ab17148b76e7f421f7a204c1d96dc6c268636d6e2c0c88212f0ae35dea",
        description="hybrid at 56x56: a ResNet stem of two stages (two bottleneck units of width 32, two of width "
                    "64) and 4 Transformer layers of width 128, trained from scratch on the 60,000 training "
                    "images; the mean of its weights after epochs 51-60 of 60",
    ),
}

__all__ = ["WEIGHTS", "SHIPPED", "list_weights", "load_weights", "resample_position_embedding", "build_model"]


def list_weights(variant=None):
    """Returns the catalogue entries (dicts), optionally of one variant.

    Args:
        variant: optional variant name, e.g. `"B/16"`.

    Returns:
        A list of dicts with `name`, `variant`, `image_size`, `classes`,
        `url`, `size`, `sha256`, `gelu_approximate`, `layer_norm_epsilon`,
        `representation_size` and `description`.

    Example:

    >>> names = [w["name"] for w in keras_vit.checkpoints.list_weights("B/16")]
    >>> "vit_b16_augreg_in21k_ft_in1k_224" in names
    True
    """
    if variant is not None:
        from keras_vit.variants import canonical_name

        variant = canonical_name(variant)
    return [dict(entry) for entry in WEIGHTS.values() if variant in (None, entry["variant"])]


def variant_of(row):
    """The variant whose table row matches `row` (num_layers, hidden_size, ..., resnet), or None."""
    keys = ("num_layers", "hidden_size", "mlp_dim", "num_heads", "patch_size")
    for name, table_row in {**VARIANTS, **HYBRID_VARIANTS}.items():
        if all(row.get(k) == table_row[k] for k in keys) and (
            resnet_config(row.get("resnet")) == resnet_config(table_row.get("resnet"))
        ):
            return name
    return None


def is_catalogue_name(weights):
    return isinstance(weights, str) and (weights in ("imagenet", "imagenet21k") or weights in WEIGHTS)


def get_entry(weights, variant=None, image_size=None):
    """The catalogue entry for `weights` ("imagenet", "imagenet21k" or a name) and a model's variant."""
    if weights in WEIGHTS:
        entry = WEIGHTS[weights]
        if variant is not None and entry["variant"] != variant:
            raise ValueError(
                f"The weights {weights!r} are for ViT-{entry['variant']}, and this model is ViT-{variant}. "
                f"Received: weights={weights!r}"
            )
        return dict(entry)
    if weights not in ("imagenet", "imagenet21k"):
        raise ValueError(
            f"Unknown weights name; see keras_vit.checkpoints.list_weights(). Received: weights={weights!r}"
        )
    if variant is None:
        raise ValueError(
            f'`weights="{weights}"` needs one of the paper\'s variants {[*VARIANTS, *HYBRID_VARIANTS]}; this model\'s '
            "layers, width, MLP, heads and patch size match none of them. Pass `weights=None` or a file path."
        )
    if weights == "imagenet21k":
        return dict(WEIGHTS[IMAGENET21K[variant]])
    at_224, at_384 = IMAGENET[variant]
    name = at_384 if (image_size == 384 and at_384) else (at_224 or at_384)
    if name is None:
        raise ValueError(
            f"No ImageNet-1k fine-tune of ViT-{variant} is published; use `weights='imagenet21k'` "
            f"({IMAGENET21K[variant]}) or a file path. Received: weights={weights!r}"
        )
    return dict(WEIGHTS[name])


def load_weights(model, source, resample="official", skip_mismatched_head=True):
    """Loads pretrained weights into a keras_vit model; see `keras_vit.loading.load_weights`."""
    from keras_vit.loading import load_weights as _load

    return _load(model, source, resample=resample, skip_mismatched_head=skip_mismatched_head)


def build_model(name, **kwargs):
    """Builds the model of a catalogue entry with its weights, e.g. `build_model("vit_b16_in21k")`."""
    from keras_vit.model import CONSTRUCTORS

    entry = get_entry(name)
    kwargs.setdefault("input_shape", (entry["image_size"], entry["image_size"], 3))
    kwargs.setdefault("classes", entry["classes"])
    return CONSTRUCTORS[entry["variant"]](weights=name, **kwargs)


def shipped_dir():
    """Where the shipped models are: `$KERAS_VIT_WEIGHTS_DIR`, else the repository's `weights/` folder."""
    return os.environ.get("KERAS_VIT_WEIGHTS_DIR") or os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights"
    )


def shipped_path(name):
    """The checked path of a shipped model (`SHIPPED`), e.g. `shipped_path("vit_fashion_mnist")`.

    Raises:
        ValueError: when the file is missing or its sha256 differs from the
            recorded one (the message names the path and both hashes).
    """
    from keras_vit.download import sha256_of

    entry = SHIPPED[name]
    path = os.path.join(shipped_dir(), entry["file"])
    if not os.path.isfile(path):
        raise ValueError(
            f"The shipped model {name!r} is not at {path}: it lives in the repository's weights/ folder. "
            "Set KERAS_VIT_WEIGHTS_DIR to the folder that holds it, or pass the .keras file's path."
        )
    digest = sha256_of(path)
    if digest != entry["sha256"]:
        raise ValueError(
            f"The shipped model {name!r} at {path} was changed: sha256 {digest}, expected {entry['sha256']}. "
            "Restore it (git checkout weights/) or pass your own file's path."
        )
    return path
