"""The ViT variant table: one row per model of the paper, pure data.

Rows follow Table 1 of "An Image is Worth 16x16 Words" (Dosovitskiy et al.,
ICLR 2021, https://arxiv.org/abs/2010.11929) plus the Ti and S widths of
"How to train your ViT?" (Steiner et al., 2021). The named constructors
(`ViT_B16`, ...) are generated from this table by `keras_vit.model`.

`HYBRID_VARIANTS` holds the hybrids of section 3.1: a ResNet stem whose
feature map is cut into 1x1 "patches". `resnet` gives its stages of
bottleneck units (width 64, doubled per stage); the root and every stage
after the first halve the resolution, so (3, 4, 9) has a total stride of 16.
"""

VARIANTS = {
    "Ti/16": dict(num_layers=12, hidden_size=192, mlp_dim=768, num_heads=3, patch_size=16),
    "S/16": dict(num_layers=12, hidden_size=384, mlp_dim=1536, num_heads=6, patch_size=16),
    "S/32": dict(num_layers=12, hidden_size=384, mlp_dim=1536, num_heads=6, patch_size=32),
    "B/8": dict(num_layers=12, hidden_size=768, mlp_dim=3072, num_heads=12, patch_size=8),
    "B/16": dict(num_layers=12, hidden_size=768, mlp_dim=3072, num_heads=12, patch_size=16),
    "B/32": dict(num_layers=12, hidden_size=768, mlp_dim=3072, num_heads=12, patch_size=32),
    "L/16": dict(num_layers=24, hidden_size=1024, mlp_dim=4096, num_heads=16, patch_size=16),
    "L/32": dict(num_layers=24, hidden_size=1024, mlp_dim=4096, num_heads=16, patch_size=32),
    "H/14": dict(num_layers=32, hidden_size=1280, mlp_dim=5120, num_heads=16, patch_size=14),
}

HYBRID_VARIANTS = {
    "R50+B/16": dict(num_layers=12, hidden_size=768, mlp_dim=3072, num_heads=12, patch_size=1, resnet=(3, 4, 9)),
    "R26+S/32": dict(num_layers=12, hidden_size=384, mlp_dim=1536, num_heads=6, patch_size=1, resnet=(2, 2, 2, 2)),
}

# Dropout of the paper's ImageNet-21k pre-training recipe (Table 3 / appendix B.1):
# only the large models train with dropout 0.1, and R50+B/16 in the official config.
DEFAULT_DROPOUT = {"L/16": 0.1, "H/14": 0.1, "R50+B/16": 0.1}
RESNET_WIDTH = 64


def resnet_config(resnet):
    """Normalises a `resnet` option: `None`, stage depths `(3, 4, 9)`, or
    `dict(num_layers=(3, 4, 9), width=64)` -> `None` or that dict."""
    if resnet is None:
        return None
    config = dict(resnet) if isinstance(resnet, dict) else {"num_layers": resnet}
    unknown = set(config) - {"num_layers", "width"}
    try:
        stages = tuple(int(n) for n in config.get("num_layers", ()))
        width = int(config.get("width", RESNET_WIDTH))
    except (TypeError, ValueError):
        stages, width = None, 0
    if unknown or stages is None or any(n < 1 for n in stages) or width < 32 or width % 32:
        raise ValueError(
            "`resnet` must be a tuple of stage depths, e.g. (3, 4, 9), or "
            "dict(num_layers=(3, 4, 9), width=64) with a width that is a multiple of 32 "
            f"(GroupNorm uses 32 groups). Received: resnet={resnet!r}"
        )
    return {"num_layers": stages, "width": width}


def resnet_stride(resnet):
    """Total stride of a ResNet stem (`resnet_config` form or `None`): 4 for the root, 2 per later stage."""
    if resnet is None:
        return 1
    return 4 * 2 ** max(len(resnet["num_layers"]) - 1, 0)


def constructor_name(variant):
    """Returns the public constructor name of a variant: "B/16" -> "ViT_B16", "R50+B/16" -> "ViT_R50_B16"."""
    return "ViT_" + variant.replace("+", "_").replace("/", "")


def canonical_name(variant):
    """Returns the table key of a variant written "B/16", "ViT-B/16", "B16", "ViT_B16",
    "R50+ViT-B/16", "R50+ViT-B_16" or "ViT_R50_B16"."""
    key = str(variant).replace("ViT-", "").replace("ViT_", "").strip()
    for name in (*VARIANTS, *HYBRID_VARIANTS):
        if key in (name, name.replace("/", ""), name.replace("/", "_"), constructor_name(name)[4:]):
            return name
    raise ValueError(
        f"Unknown ViT variant. Expected one of {[*VARIANTS, *HYBRID_VARIANTS]}. Received: variant={variant!r}"
    )


def get_variant(variant):
    """Returns (a copy of) the table row of `variant`, e.g. "B/16" or "R50+B/16"."""
    name = canonical_name(variant)
    return dict(VARIANTS.get(name) or HYBRID_VARIANTS[name])
