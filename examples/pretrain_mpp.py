r"""Self-supervised pre-training by masked patch prediction, then fine-tuning.

The paper's section 4.6 and appendix B.1.2 (`keras_vit.mpp`): half of the
patch embeddings of each image are corrupted (80% a learned mask token, 10% a
random other patch, 10% unchanged) and the ViT predicts each corrupted
patch's 3-bit mean colour. The pre-trained ViT is then fine-tuned on the
labels, and the same architecture is trained from scratch with the same
fine-tuning flags for comparison.

Examples:

    # The comparison on Fashion-MNIST (measured 22.8 min on 2 busy CPU cores; see the README):
    python examples/pretrain_mpp.py --output_dir=runs/mpp

    # A short run to see it work; or the 8-class grey-level target:
    python examples/pretrain_mpp.py --quick --output_dir=runs/mpp_quick
    python examples/pretrain_mpp.py --target=grey --pretrain_epochs=10

Outputs in --output_dir: pretrain/vit_mpp.weights.h5 (the pre-trained ViT),
finetune/ and scratch/ (as examples/train.py writes them) and
mpp_summary.json. `keras-vit pretrain` runs the same code.
"""

import sys

from absl import app, flags

from keras_vit import cli_pretrain

cli_pretrain.define_flags(flags.FLAGS)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli_pretrain.run(cli_pretrain.apply_quick(flags.FLAGS), sys.argv)


if __name__ == "__main__":
    app.run(main)
