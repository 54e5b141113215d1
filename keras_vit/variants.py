"""The ViT variant table: one row per model of the paper, pure data.

Rows follow Table 1 of "An Image is Worth 16x16 Words" (Dosovitskiy et al.,
ICLR 2021, https://arxiv.org/abs/2010.11929) plus the Ti and S widths of
"How to train your ViT?" (Steiner et al., 2021). The named constructors
(`ViT_B16`, ...) are generated from this table by `keras_vit.model`.
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

# Dropout of the paper's ImageNet-21k pre-training recipe (Table 3 / appendix B.1):
# only the large models train with dropout 0.1.
DEFAULT_DROPOUT = {"L/16": 0.1, "H/14": 0.1}


def constructor_name(variant):
    """Returns the public constructor name of a variant: "B/16" -> "ViT_B16"."""
    return "ViT_" + variant.replace("/", "")


def canonical_name(variant):
    """Returns the table key of a variant written "B/16", "ViT-B/16", "B16" or "ViT_B16"."""
    key = str(variant).replace("ViT-", "").replace("ViT_", "").strip()
    for name in VARIANTS:
        if key in (name, name.replace("/", "")):
            return name
    raise ValueError(
        f"Unknown ViT variant. Expected one of {list(VARIANTS)}. Received: variant={variant!r}"
    )


def get_variant(variant):
    """Returns (a copy of) the table row of `variant`, e.g. "B/16"."""
    return dict(VARIANTS[canonical_name(variant)])
