"""`keras-vit pretrain`: masked patch prediction, then fine-tuning, against training from scratch.

The paper's self-supervised pre-training (section 4.6, appendix B.1.2;
`keras_vit.mpp`) on the training images without their labels, then
supervised fine-tuning of the same ViT on the labels (its classification
head starts fresh), and, for comparison, the same architecture trained from
scratch with the same flags (same initialisation seed, epochs, steps and
optimizer). Both are evaluated on the test set.

Outputs in `--output_dir`: `pretrain/` (`vit_mpp.weights.h5`, the
pre-trained ViT, usable with `keras-vit train --init_weights`;
`history.json`; TensorBoard `logs/`), `finetune/` and `scratch/` (what
`keras-vit train` writes), and `mpp_summary.json` with both accuracies and
times. `examples/pretrain_mpp.py` runs the same code.
"""

import json
import os
import shlex
import sys
import time

from absl import flags

from keras_vit import cli_train
from keras_vit.cli_demo import PLAIN_DEFAULTS

# The demo's plain ViT and recipe (4 layers, width 64, patch 4 at 28x28): 5 epochs of pre-training, then 3
# epochs of fine-tuning and 3 from scratch; measured 22.8 min with --mlp_dim=128 on 2 CPU cores shared
# with other jobs (README).
PRETRAIN_DEFAULTS = dict(PLAIN_DEFAULTS, epochs=3, warmup_epochs=0.5, output_dir="runs/mpp")
QUICK = dict(pretrain_epochs=1, epochs=1, max_train_examples=6_000, max_eval_examples=2_000)


def define_flags(values):
    """Defines `keras-vit train`'s flags (for the fine-tuning runs) and the pre-training flags."""
    from keras_vit.mpp import TARGETS

    cli_train.define_flags(values, **PRETRAIN_DEFAULTS)
    kw = {"flag_values": values}
    flags.DEFINE_integer("pretrain_epochs", 5, "Masked patch prediction epochs.", **kw)
    flags.DEFINE_integer("pretrain_steps_per_epoch", None, "Pre-training steps per epoch (default: one pass).", **kw)
    flags.DEFINE_float("pretrain_learning_rate", 1e-3, "Peak pre-training learning rate (--optimizer, "
                       "--weight_decay, --decay and --clipnorm are shared with fine-tuning).", **kw)
    flags.DEFINE_float("pretrain_warmup_epochs", 0.5, "Pre-training linear warm-up in epochs.", **kw)
    flags.DEFINE_enum("target", "colour", list(TARGETS), "colour: the paper's 3-bit mean colour, 512 classes "
                      "(grey images use only the 8 with r=g=b); grey: 3-bit mean grey level, 8 classes.", **kw)
    flags.DEFINE_float("mask_ratio", 0.5, "Share of the patches corrupted per image.", **kw)
    flags.DEFINE_bool("scratch", True, "Also train the architecture from scratch with the same fine-tuning "
                      "flags, for comparison.", **kw)
    flags.DEFINE_bool("quick", False, "A short run (1 + 1 + 1 epochs on 6,000 images) to see it work.", **kw)


def apply_quick(values):
    """With `--quick`, sets the `QUICK` values of the flags the command line did not give."""
    from keras_vit.cli import fill_unset

    return fill_unset(values, QUICK) if values.quick else values


def _parse(argv):
    from keras_vit.cli import parse_flags

    return apply_quick(parse_flags(argv, define_flags, positional=False)[0])


def pretrain(values):
    """Pre-trains the ViT the flags describe with masked patch prediction.

    Args:
        values: parsed flags (`define_flags`).

    Returns:
        `(vit, report)`: the pre-trained ViT (a classifier whose head is still
        at its initialisation) and a dict of what was done and measured.
    """
    import keras

    from keras_vit import atomic, data, loading, mpp, training, xla_cpu

    if values.xla_ynnpack:
        xla_cpu.use_ynnpack_dots()  # before XLA's first compilation, which reads XLA_FLAGS
    if values.strategy != "default":
        raise ValueError("Masked patch prediction runs on the default strategy; train with --strategy after it "
                         f"from pretrain/vit_mpp.weights.h5. Received: strategy={values.strategy!r}")
    keras.utils.set_random_seed(values.seed)
    policy = training.set_mixed_precision(values.mixed_precision)
    train_ds, class_names = data.load(values.dataset, values.train_split, values.data_dir, values.manual_dir)
    if values.max_train_examples:
        train_ds = train_ds.take(values.max_train_examples)
    num_train = data.count(train_ds)
    batch = values.batch_size
    steps_per_epoch = values.pretrain_steps_per_epoch or max(num_train // batch, 1)
    images = data.pipeline(
        train_ds, values.image_size, batch, len(class_names), training=True, seed=values.seed,
        **cli_train.augmentation(values), cache=values.dataset == "fashion_mnist",
    ).map(lambda image, label: image)  # Self-supervised: the labels are dropped.
    if values.pretrain_steps_per_epoch:
        images = images.repeat()

    # Built like `keras-vit train` builds it, after the same seed: the scratch run starts from these weights.
    vit = cli_train.build_model(values, len(class_names))
    if values.init_weights:
        loading.load_weights(vit, values.init_weights)
    if policy != "float32":
        training.keep_attention_softmax_in_float32(vit)
    model = mpp.mpp_model(vit, target=values.target, mask_ratio=values.mask_ratio, seed=values.seed)
    optimizer = training.create_optimizer(
        values.optimizer, values.pretrain_learning_rate, total_steps=steps_per_epoch * values.pretrain_epochs,
        warmup_steps=int(values.pretrain_warmup_epochs * steps_per_epoch), decay=values.decay,
        weight_decay=values.weight_decay if values.optimizer == "adamw" else 0.0,
        global_clipnorm=values.clipnorm or None, model=model,
    )
    model.compile(optimizer=optimizer, jit_compile=cli_train.jit_compile(values))

    out = os.path.join(values.output_dir, "pretrain")
    os.makedirs(out, exist_ok=True)
    classes = mpp.num_target_classes(values.target)
    print(f"keras-vit pretrain: masked patch prediction on {num_train} images ({values.target} target, "
          f"{classes} classes), {steps_per_epoch} steps x {values.pretrain_epochs} epochs, batch {batch}", flush=True)
    start = time.time()
    history = model.fit(images, epochs=values.pretrain_epochs, steps_per_epoch=steps_per_epoch, verbose=values.verbose,
                        shuffle=False, callbacks=[keras.callbacks.TensorBoard(os.path.join(out, "logs"))])
    seconds = time.time() - start
    weights = atomic.write_with(os.path.join(out, "vit_mpp.weights.h5"), vit.save_weights)
    atomic.write_json(os.path.join(out, "history.json"), history.history)
    report = {
        "target": values.target,
        "classes": classes,
        "mask_ratio": values.mask_ratio,
        "epochs": values.pretrain_epochs,
        "steps": steps_per_epoch * values.pretrain_epochs,
        "train_seconds": round(seconds, 1),
        "loss": float(history.history["loss"][-1]),
        "masked_accuracy": float(history.history["masked_accuracy"][-1]),
        "weights": weights,
    }
    return vit, report


def _supervised(values, output_dir, init_weights):
    """One `keras-vit train` run with these flags, into `output_dir`, from `init_weights`."""
    _, _, results = cli_train.run(cli_train.with_flags(values, output_dir=output_dir, init_weights=init_weights))
    keep = ("accuracy", "loss", "train_seconds")
    return {"epochs": values.epochs, **{k: results[k] for k in keep if k in results}, "output_dir": output_dir}


def run(values, argv=None):
    """Pre-trains, fine-tunes and (with `--scratch`) trains from scratch; returns the summary dict."""
    from keras_vit import atomic

    start = time.time()
    _, report = pretrain(values)
    root = values.output_dir
    summary = {
        "command": " ".join([argv[0], *map(shlex.quote, argv[1:])]) if argv else None,
        "architecture": {"variant": values.variant, "image_size": values.image_size,
                         **({n: values[n].value for n in cli_train.SMALL_VIT} if values.variant == "custom" else {})},
        "train_examples": values.max_train_examples or "all",
        "eval_examples": values.max_eval_examples or "all",
        "pretrain": report,
        "finetune": _supervised(values, os.path.join(root, "finetune"), report["weights"]),
    }
    if values.scratch:
        summary["scratch"] = _supervised(values, os.path.join(root, "scratch"), values.init_weights)
    summary["total_seconds"] = round(time.time() - start, 1)
    path = atomic.write_json(os.path.join(root, "mpp_summary.json"), summary)
    print(json.dumps(summary, indent=1))
    line = (f"keras-vit pretrain: pre-training {report['train_seconds'] / 60:.1f} min; fine-tuned "
            f"{summary['finetune'].get('accuracy', float('nan')):.2%}")
    if values.scratch:
        line += f", from scratch {summary['scratch'].get('accuracy', float('nan')):.2%}"
    print(f"{line} after {values.epochs} epoch(s) each; summary in {path}", flush=True)
    return summary


def main(argv):
    """`keras-vit pretrain`: masked patch prediction, fine-tuning and the from-scratch comparison."""
    try:
        run(_parse(argv), argv)
    except cli_train.ArchitectureConflict as error:
        print(f"keras-vit pretrain: {error}", file=sys.stderr)
        return 1
    return 0
