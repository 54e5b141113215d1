"""`keras-vit train`: train or fine-tune a ViT with the paper's recipes.

`examples/train.py` and `examples/fine_tune.py` run the same code. Outputs go
to `--output_dir`: `backup/` (resume after a crash: start the same command
again; removed when the run is done), `history.csv` (every epoch, restarts
included), `checkpoints/latest.weights.h5`, `logs/` (TensorBoard),
`history.json`, `model.keras` and `eval.json`. Settings that differ from those
of an unfinished run in the same folder are refused (`keras_vit.resume`).
"""

import os
import sys
import time
import types

from absl import flags

from keras_vit.layers import POSITION_EMBEDDINGS

SMALL_VIT = dict(num_layers=6, hidden_size=128, mlp_dim=256, num_heads=4, patch_size=4)


def define_flags(values, **defaults):
    """Defines the training flags on a `flags.FlagValues`; `defaults` overrides defaults."""
    d = dict(
        dataset="fashion_mnist", variant="custom", image_size=28, epochs=10, batch_size=128,
        recipe="pretrain", optimizer="adamw", learning_rate=1e-3, weight_decay=0.05,
        warmup_epochs=1.0, label_smoothing=0.1, crop_area_min=1.0, output_dir="runs/vit",
    )
    d.update(defaults)
    S, I, F, B, E = (flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_float,
                     flags.DEFINE_bool, flags.DEFINE_enum)
    kw = {"flag_values": values}
    S("dataset", d["dataset"], "fashion_mnist, a tensorflow-datasets name, or a folder of "
      "images with one sub-folder per class (optionally train/ and test/ inside).", **kw)
    S("data_dir", None, "Folder of the Fashion-MNIST idx files, or TFDS data_dir.", **kw)
    S("manual_dir", None, "TFDS manual download folder (imagenet2012).", **kw)
    S("train_split", "train", "Training split.", **kw)
    S("eval_split", "test", "Evaluation split; 'none' skips evaluation.", **kw)
    I("max_train_examples", None, "Use only the first N training examples.", **kw)
    I("max_eval_examples", None, "Use only the first N evaluation examples.", **kw)
    S("variant", d["variant"], "ViT variant (Ti/16 ... H/14), or 'custom' for the --num_layers ... flags.", **kw)
    for name, value in SMALL_VIT.items():
        I(name, d.get(name, value), f"{name} of a custom ViT.", **kw)
    flags.DEFINE_list("resnet", d.get("resnet"), "Stage depths of a ResNet stem in front of a custom ViT, e.g. '1' or "
                      "'3,4,9' (a hybrid, paper section 3.1; set --patch_size=1 to embed its feature map "
                      "position by position). Default: none, patches of pixels.", **kw)
    I("resnet_width", d.get("resnet_width", 64), "Root width of the --resnet stem (a multiple of 32).", **kw)
    I("image_size", d["image_size"], "Input height and width.", **kw)
    E("position_embedding", d.get("position_embedding", "learned"), list(POSITION_EMBEDDINGS),
      "Position embedding (the paper's ablation, appendix D.4).", **kw)
    E("classifier", d.get("classifier", "token"), ["token", "gap"],
      "Class token or global average pooling of the patch tokens.", **kw)
    F("dropout", 0.0, "Dropout rate.", **kw)
    F("drop_path", d.get("drop_path", 0.0), "Stochastic depth rate of the last block.", **kw)
    S("init_weights", None, "Start from these weights (.weights.h5/.keras/.npz, any image size: "
      "position embeddings are resized; a head of another size is skipped). With --variant=custom the "
      "architecture is the file's; --num_layers ... --resnet flags that ask for another one are refused.", **kw)
    I("epochs", d["epochs"], "Training epochs.", **kw)
    I("steps_per_epoch", None, "Steps per epoch (default: one pass over the data).", **kw)
    I("batch_size", d["batch_size"], "Global batch size (split over replicas).", **kw)
    E("recipe", d["recipe"], ["pretrain", "finetune"], "Base recipe (DESIGN.md section 4).", **kw)
    E("optimizer", d["optimizer"], ["adamw", "adam", "sgd"], "Optimizer.", **kw)
    F("learning_rate", d["learning_rate"], "Peak learning rate at --base_batch_size.", **kw)
    I("base_batch_size", None, "Batch size --learning_rate is stated for; the rate is scaled "
      "linearly to the global batch. Default: no scaling.", **kw)
    F("weight_decay", d["weight_decay"], "AdamW weight decay (0 for adam/sgd).", **kw)
    F("warmup_epochs", d["warmup_epochs"], "Linear warm-up length in epochs.", **kw)
    E("decay", d.get("decay", "cosine"), ["cosine", "linear"], "Decay after warm-up.", **kw)
    F("label_smoothing", d["label_smoothing"], "Label smoothing.", **kw)
    F("clipnorm", 1.0, "Gradient clipping global norm (0: off).", **kw)
    F("crop_area_min", d["crop_area_min"], "Inception crop minimum area; 1 (the default) disables cropping. The paper uses 0.05 on "
      "ImageNet-scale data; on 28x28 Fashion-MNIST any crop slowed learning in our runs.", **kw)
    B("flip", True, "Random horizontal flips.", **kw)
    I("translate", d.get("translate", 0), "Random shifts of up to N pixels (zero padding) when not cropping.", **kw)
    F("erasing", 0.0, "Random erasing probability (0: off): one rectangle of 2%-33% of the image "
      "filled with noise (Zhong et al. 2020; timm's --reprob).", **kw)
    B("randaugment", False, "Keras RandAugment.", **kw)
    F("mixup", 0.0, "MixUp alpha (0: off).", **kw)
    F("cutmix", 0.0, "CutMix alpha (0: off).", **kw)
    E("mixed_precision", "none", ["none", "auto", "bf16", "fp16"], "Mixed precision policy.", **kw)
    B("jit_compile", d.get("jit_compile"), "XLA-compile the train step (default: Keras' 'auto', which is on for GPUs and off on "
      "CPUs, where keras_vit trains faster without XLA; never under --strategy=tpu, which compiles anyway).", **kw)
    B("xla_ynnpack", True, "With XLA on CPUs, run matrix products in YNNPACK (adds "
      "--xla_cpu_experimental_ynn_fusion_type=individual_dot to XLA_FLAGS unless XLA_FLAGS names that flag; "
      "keras_vit.xla_cpu). --noxla_ynnpack keeps XLA's own.", **kw)
    E("strategy", "default", ["default", "mirrored", "multiworker", "tpu"], "Distribution strategy.", **kw)
    S("tpu", None, "TPU name or grpc:// address for --strategy=tpu.", **kw)
    I("seed", 0, "Seed of weights, data order and augmentation.", **kw)
    I("average_last", 0, "Keep the weights of the last N epochs (checkpoints/epoch_NNN.weights.h5) and write "
      "their mean as the final model (keras_vit.averaging). Default 0: the last epoch's weights as they are.",
      lower_bound=0, **kw)
    S("output_dir", d["output_dir"], "Backups, checkpoints, logs and the final model go here.", **kw)
    I("verbose", 1, "Keras progress: 0 silent, 1 progress bar, 2 one line per epoch.", **kw)


def augmentation(values):
    """The per-image training augmentation the flags ask for, as `data.pipeline` arguments."""
    return dict(area_range=None if values.crop_area_min >= 1 else (values.crop_area_min, 1.0),
                flip=values.flip, translate=values.translate, erasing=values.erasing)


def jit_compile(values):
    """`model.compile`'s `jit_compile` for these flags: `"auto"` unless `--[no]jit_compile` was given."""
    if values.strategy == "tpu":
        return False
    return "auto" if values.jit_compile is None else values.jit_compile


def with_flags(values, **changes):
    """A plain copy of the flags (absl `FlagValues` or a namespace) with `changes`, for one more `run`."""
    plain = values.flag_values_dict() if hasattr(values, "flag_values_dict") else vars(values)
    return types.SimpleNamespace(**{**plain, **changes})


def architecture_of(path):
    """The custom ViT a checkpoint file holds (layers, width, MLP, heads, patch, ResNet stem), to fine-tune it."""
    from keras_vit import cli_convert, converters

    arch = cli_convert.architecture(converters.read_checkpoint(path)[0])
    resnet = arch["resnet"]
    stem = "" if resnet is None else (f", ResNet stem of {','.join(map(str, resnet['num_layers']))} units per stage, "
                                      f"width {resnet['width']}")
    print(f"keras-vit train: the architecture of {path}: {arch['num_layers']} layers, width {arch['hidden_size']}, "
          f"MLP {arch['mlp_dim']}, {arch['num_heads']} heads, patch {arch['patch_size']}{stem}")
    return arch


class ArchitectureConflict(ValueError):
    """Flags given on the command line ask for another architecture than the --init_weights file holds."""


def _given(values, name):
    """Whether flag `name` was given on the command line (False for a plain copy made by `with_flags`)."""
    try:
        return values[name].present > 0
    except (TypeError, KeyError):
        return False


def refuse_other_architecture(values, arch):
    """Raises when a flag given on the command line asks for another architecture than the checkpoint's."""
    stem = arch.get("resnet") or {}
    holds = {**{name: arch[name] for name in SMALL_VIT},
             "resnet": [int(n) for n in stem.get("num_layers", ())] or None, "resnet_width": stem.get("width")}
    asked = {name: getattr(values, name) for name in holds if _given(values, name)}
    if asked.get("resnet") is not None:
        asked["resnet"] = [int(n) for n in asked["resnet"]]
    if "resnet_width" in asked and holds["resnet_width"] is None:
        holds["resnet_width"] = "no stem"
    conflicts = {name: value for name, value in asked.items() if value != holds[name]}
    if conflicts:
        def shown(value):
            return ",".join(map(str, value)) if isinstance(value, list) else value

        given = ", ".join(f"--{name}={shown(value)}" for name, value in conflicts.items())
        held = ", ".join(f"{name}={shown(holds[name])}" for name in conflicts)
        raise ArchitectureConflict(
            f"--init_weights={values.init_weights} holds another architecture than {given} asks for "
            f"(the file has {held}). With --variant=custom the file's architecture is built: drop those "
            "flags, or give a --variant to train that one from the file's weights where they fit."
        )


def file_architecture(values):
    """The --init_weights file's architecture where --variant=custom builds it (else None), after refusing
    architecture flags that ask for another one."""
    if values.variant != "custom" or not values.init_weights or not os.path.isfile(values.init_weights):
        return None
    arch = architecture_of(values.init_weights)
    refuse_other_architecture(values, arch)
    return arch


def build_model(values, num_classes, arch=None):
    """Builds the ViT the flags describe (`arch`: `file_architecture(values)`, when already read)."""
    import keras_vit
    from keras_vit.variants import get_variant

    arch = arch or file_architecture(values)
    if arch is None and values.variant == "custom":
        arch = {name: getattr(values, name) for name in SMALL_VIT}
        if values.resnet:
            arch["resnet"] = dict(num_layers=values.resnet, width=values.resnet_width)
    elif arch is None:
        arch = get_variant(values.variant)
    return keras_vit.ViT(
        **arch,
        input_shape=(values.image_size, values.image_size, 3),
        classes=num_classes,
        dropout_rate=values.dropout,
        drop_path_rate=values.drop_path,
        position_embedding=values.position_embedding,
        classifier=values.classifier,
        name="vit_" + values.variant.replace("/", "").lower(),
    )


# Training flags that say where a run reads and writes, how much it prints, which library runs the
# same products, or what is made of the trained epochs' weights at the end, not what it trains.
NOT_SETTINGS = ("output_dir", "verbose", "data_dir", "manual_dir", "tpu", "xla_ynnpack", "average_last")


def run_settings(values):
    """What defines a run, for `keras_vit.resume`: the training flags but `NOT_SETTINGS`."""
    return {name: getattr(values, name) for name in setting_defaults()}


def setting_defaults():
    """Each setting's default, which `keras_vit.resume` assumes for one a backed-up run did not record."""
    training_flags = flags.FlagValues()
    define_flags(training_flags)
    return {name: training_flags[name].default for name in training_flags if name not in NOT_SETTINGS}


def run(values, callbacks=()):
    """Trains and evaluates as the flags say; returns `(model, history, results)`."""
    import functools

    import keras

    from keras_vit import atomic, averaging, data, distribute, export, loading, resume, training, xla_cpu

    arch = file_architecture(values)  # before any work, so that a conflicting flag fails fast
    if values.xla_ynnpack:
        xla_cpu.use_ynnpack_dots()  # before XLA's first compilation, which reads XLA_FLAGS
    keras.utils.set_random_seed(values.seed)
    policy = training.set_mixed_precision(values.mixed_precision)
    strategy = distribute.resolve_strategy(values.strategy, tpu=values.tpu)
    batch = distribute.global_batch_size(values.batch_size, strategy)
    learning_rate = distribute.scale_learning_rate(values.learning_rate, batch, values.base_batch_size)

    train_ds, class_names = data.load(values.dataset, values.train_split, values.data_dir, values.manual_dir)
    evaluate = values.eval_split not in ("", "none")
    eval_ds = data.load(values.dataset, values.eval_split, values.data_dir, values.manual_dir)[0] if evaluate else None
    if values.max_train_examples:
        train_ds = train_ds.take(values.max_train_examples)
    if values.max_eval_examples and evaluate:
        eval_ds = eval_ds.take(values.max_eval_examples)
    num_train = data.count(train_ds)
    batches_per_pass = num_train // batch  # the last, partial batch of a pass is dropped
    if batches_per_pass < 1:
        raise ValueError(f"{values.dataset} has {num_train} training examples, fewer than one batch: "
                         f"lower --batch_size (now {batch}).")
    steps_per_epoch = values.steps_per_epoch or batches_per_pass
    total_steps = steps_per_epoch * values.epochs
    mixing = values.mixup > 0 or values.cutmix > 0
    label_mode = "one_hot" if mixing else "int"
    cache = values.dataset == "fashion_mnist"
    common = dict(image_size=values.image_size, num_classes=len(class_names), seed=values.seed, label_mode=label_mode)
    # The training source is cached here, not in `pipeline`: `passes` builds a pipeline per pass, and each
    # would fill a cache of its own.
    make_train = functools.partial(
        data.pipeline, train_ds.cache() if cache else train_ds, training=True, **augmentation(values),
        randaugment=values.randaugment, mixup=values.mixup, cutmix=values.cutmix, **common,
    )
    make_eval = functools.partial(data.pipeline, eval_ds, training=False, cache=cache, **common)

    output_dir = values.output_dir
    own_dir = distribute.writable_dir(output_dir, strategy)
    all_callbacks = resume.callbacks(output_dir, run_settings(values), strategy, own_dir=own_dir,
                                     defaults=setting_defaults()) + [
        keras.callbacks.TensorBoard(os.path.join(own_dir, "logs")),
        *callbacks,
    ]
    checkpoints = os.path.join(own_dir, resume.CHECKPOINTS_DIR)
    if values.average_last:
        all_callbacks.append(averaging.EpochWeights(checkpoints, values.average_last))
    # Pass k over the data is shuffled and augmented by (seed, k) alone, and the stream starts where the
    # backed-up epochs stopped: a resumed run gets the batches an uninterrupted one would have had.
    start_batch = resume.finished_epochs(output_dir, strategy) * steps_per_epoch
    train_input = data.distributed(strategy, lambda b, ctx: data.passes(
        lambda k: make_train(batch_size=b, input_context=ctx, epoch=k), batches_per_pass, start_batch), batch)
    eval_input = None
    if evaluate:
        eval_input = data.distributed(strategy, lambda b, ctx: make_eval(batch_size=b, input_context=ctx), batch)

    with strategy.scope():
        model = build_model(values, len(class_names), arch)
        if values.init_weights:
            loading.load_weights(model, values.init_weights)
        if policy != "float32":
            training.keep_attention_softmax_in_float32(model)
        overrides = dict(
            optimizer=values.optimizer, learning_rate=learning_rate,
            weight_decay=values.weight_decay if values.optimizer == "adamw" else 0.0,
            warmup_steps=int(values.warmup_epochs * steps_per_epoch), decay=values.decay,
            label_smoothing=values.label_smoothing, global_clipnorm=values.clipnorm or None,
        )
        training.compile_model(model, values.recipe, total_steps=total_steps, label_mode=label_mode,
                               jit_compile=jit_compile(values), **overrides)
        distribute.prepare_multiworker_model(model, strategy, (len(class_names),) if mixing else ())

    print(f"keras-vit train: {num_train} training examples, {len(class_names)} classes, "
          f"{strategy.num_replicas_in_sync} replica(s), global batch {batch}, lr {learning_rate:g}, "
          f"{steps_per_epoch} steps x {values.epochs} epochs, {model.count_params():,} parameters", flush=True)
    start = time.time()
    history = model.fit(train_input, epochs=values.epochs, steps_per_epoch=steps_per_epoch,
                        validation_data=eval_input, callbacks=all_callbacks, verbose=values.verbose,
                        shuffle=False)
    train_seconds = time.time() - start
    # All the run's epochs, those before a restart included.
    history.history = resume.history(own_dir) or history.history
    averaged = []
    if values.average_last:
        averaged = averaging.average_last(model, checkpoints, values.average_last, values.epochs)
        print(f"keras-vit train: the final model is the mean of the weights after epochs "
              f"{', '.join(map(str, averaged)) or '(none kept: the last epoch is kept as it is)'}", flush=True)
    results = {}
    if evaluate:
        results = {k: float(v) for k, v in model.evaluate(eval_input, return_dict=True, verbose=0).items()}
        print(f"final evaluation on {values.eval_split}: "
              + ", ".join(f"{k}={results[k]:.4f}" for k in ("loss", "accuracy")), flush=True)
    results.update(train_seconds=round(train_seconds, 1), parameters=model.count_params())
    if values.average_last:
        results["averaged_epochs"] = averaged
    atomic.write_json(os.path.join(own_dir, "history.json"), history.history)
    atomic.write_json(os.path.join(own_dir, "eval.json"), results)
    model_path = atomic.write_with(os.path.join(own_dir, "model.keras"), model.save)
    # `keras-vit predict model.keras` prints these names.
    export.write_labels(model_path, class_names)
    resume.finish(output_dir, strategy)
    return model, history, results


def _parse(argv, **defaults):
    from keras_vit.cli import parse_flags

    return parse_flags(argv, lambda values: define_flags(values, **defaults), positional=False)[0]


def main(argv):
    """`keras-vit train`: trains a ViT from scratch (or --init_weights) and evaluates it."""
    try:
        run(_parse(argv))
    except ArchitectureConflict as error:
        print(f"keras-vit train: {error}", file=sys.stderr)
        return 1
    return 0
