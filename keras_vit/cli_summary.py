"""`keras-vit summary` and `keras-vit variants`: look at an architecture."""

from absl import flags

from keras_vit.cli import parse_flags
from keras_vit.variants import HYBRID_VARIANTS, VARIANTS, constructor_name


def variants(argv):
    """Prints the variant table, the ResNet hybrids after the plain models."""
    parse_flags(argv, lambda values: None, positional=False)
    print(f"{'variant':<9} {'constructor':<12} {'layers':>6} {'width':>6} {'mlp':>6} {'heads':>5} {'patch':>5}  resnet")
    for name, row in {**VARIANTS, **HYBRID_VARIANTS}.items():
        stages = row.get("resnet")
        print(
            f"{name:<9} {constructor_name(name):<12} {row['num_layers']:>6} {row['hidden_size']:>6} "
            f"{row['mlp_dim']:>6} {row['num_heads']:>5} {row['patch_size']:>5}  {stages or '-'}"
        )
    return 0


def main(argv):
    """Builds a variant with random weights and prints its Keras summary."""

    def define(values):
        flags.DEFINE_string("variant", "B/16", "ViT variant, e.g. Ti/16, B/16, L/32.", flag_values=values)
        flags.DEFINE_integer("image_size", 224, "Input height and width.", flag_values=values)
        flags.DEFINE_integer("classes", 1000, "Number of classes of the head.", flag_values=values)

    values, _ = parse_flags(argv, define, "[--variant B/16] [--image_size 224] [--classes 1000]", positional=False)
    from keras_vit.model import CONSTRUCTORS
    from keras_vit.variants import canonical_name

    model = CONSTRUCTORS[canonical_name(values.variant)](
        weights=None, classes=values.classes, input_shape=(values.image_size, values.image_size, 3)
    )
    model.summary(line_length=110)
    print(f"parameters: {model.count_params():,}")
    return 0
