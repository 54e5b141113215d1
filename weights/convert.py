"""Scripted conversion of ViT checkpoints, and the catalogue table of weights/README.md.

    python weights/convert.py --source ViT-B_16.npz --output vit_b16.weights.h5
    python weights/convert.py --source vit_b16_augreg_in21k_ft_in1k_224 --output b16.keras --image_size 384
    python weights/convert.py --readme      # rewrite the table in weights/README.md from the catalogue

The same conversion as `keras-vit convert` (keras_vit.cli_convert.convert):
any official .npz, timm or Hugging Face .safetensors, keras_vit .weights.h5 /
.keras file, or catalogue name; several --source/--output pairs convert in
one run.
"""

import os

from absl import app, flags

from keras_vit import cli_convert

FLAGS = flags.FLAGS
flags.DEFINE_multi_string("source", [], "Checkpoint path or catalogue name (repeatable).")
flags.DEFINE_multi_string("output", [], "Output .weights.h5 or .keras, one per --source.")
flags.DEFINE_string("variant", None, "ViT variant (default: read from each checkpoint).")
flags.DEFINE_integer("image_size", None, "Input size (default: each checkpoint's).")
flags.DEFINE_integer("classes", None, "Head classes (default: each checkpoint's).")
flags.DEFINE_enum("resample", "official", ["official", "bicubic"], "Position-embedding resizing.")
flags.DEFINE_bool("readme", False, "Rewrite the catalogue table in weights/README.md.")

README = os.path.join(os.path.dirname(os.path.abspath(__file__)), "README.md")
BEGIN, END = "<!-- catalogue:begin -->\n", "<!-- catalogue:end -->\n"


def render_readme(text):
    """Returns README text with the table between the markers replaced by the current catalogue."""
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + BEGIN + cli_convert.catalogue_markdown() + END + tail


def main(argv):
    del argv
    if FLAGS.readme:
        with open(README) as handle:
            text = render_readme(handle.read())
        tmp = README + ".tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, README)
        print(f"updated {README}")
    if len(FLAGS.source) != len(FLAGS.output):
        raise app.UsageError("Give one --output per --source.")
    for source, output in zip(FLAGS.source, FLAGS.output):
        model, report = cli_convert.convert(source, output, FLAGS.variant, FLAGS.image_size, FLAGS.classes,
                                            resample=FLAGS.resample)
        print(f"{source} -> {output}: {model.count_params():,} parameters, resampled {report['resampled']}, "
              f"skipped {report['skipped']}")


if __name__ == "__main__":
    app.run(main)
