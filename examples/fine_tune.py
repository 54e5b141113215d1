r"""Fine-tune a ViT from a checkpoint at a new resolution (the paper's SGD recipe).

The checkpoint's position embeddings are resized to the new patch grid and a
head with another number of classes is replaced (`keras_vit.load_weights`).
Recipe (DESIGN.md section 4): SGD momentum 0.9, no weight decay, cosine decay
with warm-up, gradient clipping at global norm 1, no label smoothing.

Example, from the shipped Fashion-MNIST checkpoint (56x56) to 112x112:

    python examples/fine_tune.py --init_weights=weights/vit_fashion_mnist.keras \
        --image_size=112 --epochs=2 --output_dir=runs/fmnist_112

Outputs as for examples/train.py: TensorBoard logs, checkpoints, backup/,
history.json, eval.json, model.keras.
"""

from absl import app, flags

from keras_vit import cli_train

FINE_TUNE_DEFAULTS = dict(
    recipe="finetune", optimizer="sgd", learning_rate=0.01, weight_decay=0.0, warmup_epochs=0.2,
    label_smoothing=0.0, crop_area_min=1.0, epochs=2, image_size=56, output_dir="runs/fine_tune",
)


cli_train.define_flags(flags.FLAGS, **FINE_TUNE_DEFAULTS)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not flags.FLAGS.init_weights:
        raise app.UsageError("fine_tune.py needs --init_weights=PATH (a .weights.h5 or .keras file).")
    cli_train.run(flags.FLAGS)


if __name__ == "__main__":
    app.run(main)
