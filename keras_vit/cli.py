"""The `keras-vit` command: `keras-vit COMMAND [--flags]`.

Each command is a function that takes its argv (command name first) and
parses its own `absl.flags`; the table below maps names to them, so a command's
imports (and flags) load only when it runs.
"""

import importlib
import sys

COMMANDS = {
    "summary": ("keras_vit.cli_summary:main", "print a variant's architecture and parameter count"),
    "variants": ("keras_vit.cli_summary:variants", "list the ViT variants"),
    "train": ("keras_vit.cli_train:main", "train or fine-tune a ViT (tf.data, paper recipes, tf.distribute)"),
    "pretrain": ("keras_vit.cli_pretrain:main", "masked patch prediction pre-training, fine-tuning, and the same model from scratch"),
    "demo": ("keras_vit.cli_demo:main", "the main job: train, evaluate, save, export and plot a Fashion-MNIST ViT"),
    "export": ("keras_vit.cli_export:export", "export to a TF Serving SavedModel, TFLite/LiteRT (float32/float16/dynamic/int8), ONNX"),
    "convert": ("keras_vit.cli_convert:main", "convert an official .npz, timm/Hugging Face .safetensors or catalogue checkpoint to .weights.h5/.keras"),
    "predict": ("keras_vit.cli_export:predict", "classify image files with a .keras, SavedModel, .tflite or catalogue model"),
    "explain": ("keras_vit.cli_explain:main", "attention maps of images and the paper's Figure 6/7 analyses, as PNGs"),
}


HELP_FLAGS = ("-h", "--help", "-help", "--helpfull")


def parse_flags(argv, define, usage="[--flags]", positional=True):
    """Parses a command's `absl.flags`; returns `(values, positional arguments)`.

    `define(values)` defines the flags on a fresh `flags.FlagValues`. `--help`
    prints the usage and the flags and exits with 0; an unknown or malformed
    flag, or positional arguments where the command takes none, print the
    problem and exit with 2 (`main` turns the exit into its return value).
    """
    from absl import flags

    values = flags.FlagValues()
    define(values)
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(f"usage: {argv[0]} {usage}\n{values.get_help()}")
        raise SystemExit(0)
    try:
        rest = values(argv)[1:]
    except flags.Error as error:
        print(f"{argv[0]}: {error} (see {argv[0]} --help)", file=sys.stderr)
        raise SystemExit(2) from None
    if rest and not positional:
        print(f"{argv[0]}: takes no positional arguments. Received: {rest}", file=sys.stderr)
        raise SystemExit(2)
    return values, rest


def fill_unset(values, presets):
    """Gives the flags named in `presets` those values unless the command line set them (`--quick`)."""
    for name, value in presets.items():
        if not values[name].present:
            values[name].value = value
    return values


def _usage():
    lines = ["usage: keras-vit COMMAND [--flags]   (keras-vit COMMAND --help for its flags)", ""]
    lines += [f"  {name:<10} {help_text}" for name, (_, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    command = argv[1]
    if command not in COMMANDS:
        print(f"keras-vit: unknown command {command!r}.\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, function_name = COMMANDS[command][0].split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    try:
        return function([f"keras-vit {command}"] + argv[2:])
    except SystemExit as exit_:  # --help and flag errors, from parse_flags
        return exit_.code


if __name__ == "__main__":
    sys.exit(main())
