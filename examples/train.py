r"""Train a ViT from scratch with the paper's recipe (AdamW, warm-up + cosine, clip 1).

Examples:

    # Fashion-MNIST from /usr/share/datasets/fashion-mnist (or --data_dir), a small ViT:
    python examples/train.py --epochs=10 --output_dir=runs/fmnist

    # CIFAR-10 from tensorflow-datasets, ViT-Ti/16 at 224, on all local GPUs:
    python examples/train.py --dataset=cifar10 --variant=Ti/16 --image_size=224 \
        --strategy=mirrored --batch_size=512 --crop_area_min=0.05 --mixed_precision=auto

    # Two workers: set TF_CONFIG on each machine, then run the same command with
    # --strategy=multiworker. Start a killed run again with the same --output_dir
    # to resume from its last finished epoch.

Outputs in --output_dir: TensorBoard logs (logs/), checkpoints/latest.weights.h5,
backup/ (resume; removed when done), history.csv, history.json, eval.json and
model.keras. `keras-vit train` runs the same code.
"""

from absl import app, flags

from keras_vit import cli_train


cli_train.define_flags(flags.FLAGS)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    cli_train.run(flags.FLAGS)


if __name__ == "__main__":
    app.run(main)
