r"""The paper's ablations on Fashion-MNIST: position embeddings and class token vs GAP.

Trains the same small ViT once per setting and seed and writes a table like the
paper's Table 8 (mean +- std of the test accuracy over the seeds):

    python examples/ablations.py --seeds=0,1,2 --output_dir=runs/ablations

Settings (--settings): none, learned (1-D, the default), learned_2d, relative,
sincos_2d, gap (1-D learned with global average pooling instead of the class
token). Every training flag of `keras-vit train` applies to all runs (model
size, --epochs, --max_train_examples, ...). Outputs: one folder per run,
ablations.json (every run) and ablations.md (the table) in --output_dir.
Started again with the same --output_dir, finished runs are read back, not
trained again.
"""

import os

from absl import app, flags

from keras_vit import ablations, atomic, cli_train
from keras_vit.cli_demo import PLAIN_DEFAULTS

# The demo's plain ViT and recipe, in short runs.
ABLATION_DEFAULTS = dict(PLAIN_DEFAULTS, epochs=2, warmup_epochs=0.5, output_dir="runs/ablations")

cli_train.define_flags(flags.FLAGS, **ABLATION_DEFAULTS)
flags.DEFINE_string("settings", ",".join(ablations.DEFAULT_SETTINGS),
                    f"Comma-separated settings, from {list(ablations.SETTINGS)}.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; one run per setting and seed.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    values = flags.FLAGS
    try:
        settings = ablations.parse_settings(values.settings)
        seeds = [int(seed) for seed in values.seeds]
    except ValueError as error:
        raise app.UsageError(str(error)) from None
    records = ablations.run_study(values, settings, seeds, values.output_dir)
    text = ablations.table(records)
    atomic.write_json(os.path.join(values.output_dir, "ablations.json"),
                      {"runs": records, "summary": ablations.summarize(records)})
    atomic.write_text(os.path.join(values.output_dir, "ablations.md"), text + "\n")
    print(text)


if __name__ == "__main__":
    app.run(main)
