"""Training recipes of the paper, expressed with `model.compile` and `fit`.

"An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021,
https://arxiv.org/abs/2010.11929), section 4.1 and appendix B:

- pre-training: Adam/AdamW (0.9, 0.999), linear warm-up then cosine or
  linear decay, weight decay (here on kernels only: norms, biases, the class
  token and position embeddings are excluded), gradient clipping at global
  norm 1, optional label smoothing;
- fine-tuning: SGD with momentum 0.9, no weight decay, cosine decay with
  warm-up, clipping at global norm 1, no label smoothing, usually at a higher
  resolution (position embeddings resized by `keras_vit.load_weights`).

Strategy resolution and fault tolerance live in `keras_vit.distribute`.
"""

import contextlib
import math

import keras
from keras import ops

from keras_vit import layers as vit_layers
from keras_vit.optimizers import SGD, Adam, AdamW  # noqa: F401 (the recipes' optimizers)

OPTIMIZERS = ("adamw", "adam", "sgd")
DECAYS = ("cosine", "linear")
RECIPES = {
    # Paper, appendix B.1 (ImageNet-21k pre-training); lr for batch 4096.
    "pretrain": dict(
        optimizer="adamw",
        learning_rate=1e-3,
        weight_decay=0.03,
        warmup_steps=10_000,
        decay="linear",
        label_smoothing=0.0,
        global_clipnorm=1.0,
    ),
    # Paper, appendix B.1.1 (fine-tuning); lr for batch 512.
    "finetune": dict(
        optimizer="sgd",
        learning_rate=0.03,
        weight_decay=0.0,
        warmup_steps=500,
        decay="cosine",
        label_smoothing=0.0,
        global_clipnorm=1.0,
    ),
}
NO_DECAY_WEIGHT_NAMES = ("bias", "cls", "pos_embedding", "row_embedding", "column_embedding", "mask_token",
                         "prefix_embedding")


@keras.saving.register_keras_serializable(package="keras_vit")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to `peak`, then cosine or linear decay to `end`.

    The schedule of the paper's recipes: `lr(step) = peak * step / warmup`
    during warm-up, then over the remaining `total_steps - warmup_steps`
    steps a cosine (`end + (peak - end) * (1 + cos(pi * t)) / 2`) or linear
    (`peak + (end - peak) * t`) decay, `t` going from 0 to 1; `end` after.

    Args:
        peak: float, the learning rate after warm-up.
        total_steps: int, the steps of the whole run.
        warmup_steps: int, linear warm-up steps. Defaults to `0`.
        decay: `"cosine"` or `"linear"`. Defaults to `"cosine"`.
        end: float, the final learning rate. Defaults to `0.0`.

    Example:

    >>> schedule = WarmupDecay(1e-3, total_steps=100, warmup_steps=10)
    >>> [round(float(schedule(s)), 6) for s in (0, 5, 10, 55, 100)]
    [0.0, 0.0005, 0.001, 0.0005, 0.0]
    """

    def __init__(self, peak, total_steps, warmup_steps=0, decay="cosine", end=0.0):
        if decay not in DECAYS:
            raise ValueError(f"`decay` must be one of {DECAYS}. Received: decay={decay!r}")
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(
                "Expected 0 <= warmup_steps <= total_steps and total_steps >= 1. "
                f"Received: warmup_steps={warmup_steps}, total_steps={total_steps}"
            )
        self.peak = peak
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.decay = decay
        self.end = end

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        warm_lr = self.peak * step / warmup
        t = ops.clip((step - self.warmup_steps) / float(max(self.total_steps - self.warmup_steps, 1)), 0.0, 1.0)
        if self.decay == "cosine":
            decayed = self.end + (self.peak - self.end) * 0.5 * (1.0 + ops.cos(math.pi * t))
        else:
            decayed = self.peak + (self.end - self.peak) * t
        return ops.where(step < self.warmup_steps, warm_lr, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "end": self.end,
        }


def no_weight_decay_variables(model):
    """Returns the variables that weight decay should leave alone.

    Norm scales and offsets, every bias (including the `(heads, head_dim)`
    attention biases, which a 1-D rule would miss), the class token, the
    masked patch prediction mask token and the position embeddings: decaying them only pulls the model towards zero
    without regularising it.
    """
    excluded = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, (keras.layers.LayerNormalization, keras.layers.BatchNormalization)):
            for variable in layer.weights:
                excluded[id(variable)] = variable
    for variable in model.trainable_variables:
        if variable.name in NO_DECAY_WEIGHT_NAMES:
            excluded[id(variable)] = variable
    return list(excluded.values())


def create_optimizer(
    optimizer="adamw",
    learning_rate=1e-3,
    total_steps=10_000,
    warmup_steps=0,
    decay="cosine",
    weight_decay=None,
    global_clipnorm=1.0,
    momentum=0.9,
    model=None,
):
    """Builds the optimizer of a recipe with its warm-up/decay schedule.

    Args:
        optimizer: `"adamw"`, `"adam"` (no weight decay) or `"sgd"`
            (momentum, no weight decay).
        learning_rate: float, the peak learning rate.
        total_steps: int, steps of the whole run (schedule length).
        warmup_steps: int, linear warm-up steps.
        decay: `"cosine"` or `"linear"`.
        weight_decay: float, decoupled weight decay (AdamW only). Defaults
            to 0.05 for AdamW and none for Adam and SGD.
        global_clipnorm: float or `None`; clip gradients to this global norm.
        momentum: float, SGD momentum.
        model: optional built model; with AdamW its norms, biases, class token
            and position embeddings are excluded from weight decay.

    Returns:
        A `keras.optimizers.Optimizer`.

    Example:

    >>> opt = create_optimizer("sgd", 0.03, total_steps=100, warmup_steps=10)
    >>> type(opt).__name__, opt.global_clipnorm
    ('SGD', 1.0)
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"`optimizer` must be one of {OPTIMIZERS}. Received: optimizer={optimizer!r}")
    if weight_decay is None:
        weight_decay = 0.05 if optimizer == "adamw" else 0.0
    if optimizer != "adamw" and weight_decay:
        raise ValueError(
            f"Weight decay is only applied with optimizer='adamw' (the paper's SGD fine-tuning "
            f"uses none). Received: optimizer={optimizer!r}, weight_decay={weight_decay}"
        )
    schedule = WarmupDecay(learning_rate, total_steps, min(warmup_steps, total_steps), decay)
    common = dict(learning_rate=schedule, global_clipnorm=global_clipnorm)
    if optimizer == "sgd":
        return SGD(momentum=momentum, **common)
    if optimizer == "adam":
        return Adam(beta_1=0.9, beta_2=0.999, **common)
    opt = AdamW(weight_decay=weight_decay, beta_1=0.9, beta_2=0.999, **common)
    if model is not None:
        opt.exclude_from_weight_decay(var_list=no_weight_decay_variables(model))
    return opt


def compile_model(
    model,
    recipe="pretrain",
    total_steps=10_000,
    label_mode="int",
    jit_compile="auto",
    **overrides,
):
    """Compiles `model` with a recipe of the paper, overriding any of its values.

    Args:
        model: a `keras_vit` classifier (softmax head or logits).
        recipe: `"pretrain"` or `"finetune"` (see `RECIPES`).
        total_steps: int, length of the learning-rate schedule.
        label_mode: `"int"` (sparse labels) or `"one_hot"` (needed by MixUp
            and CutMix); label smoothing works with both.
        jit_compile: passed to `model.compile` (XLA).
        **overrides: `optimizer`, `learning_rate`, `weight_decay`,
            `warmup_steps`, `decay`, `label_smoothing`, `global_clipnorm`.

    Returns:
        The model, compiled.
    """
    if recipe not in RECIPES:
        raise ValueError(f"`recipe` must be one of {list(RECIPES)}. Received: recipe={recipe!r}")
    unknown = set(overrides) - set(RECIPES[recipe])
    if unknown:
        raise ValueError(f"Unknown recipe options {sorted(unknown)}. Expected some of {sorted(RECIPES[recipe])}")
    settings = {**RECIPES[recipe], **overrides}
    smoothing = settings.pop("label_smoothing")
    from_logits = model.layers[-1].get_config().get("activation") != "softmax"
    if label_mode == "one_hot":
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=smoothing)
        metric = keras.metrics.CategoricalAccuracy(name="accuracy")
    elif smoothing:
        loss = SparseSmoothedCrossentropy(smoothing, from_logits=from_logits)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    optimizer = create_optimizer(total_steps=total_steps, model=model, **settings)
    model.compile(optimizer=optimizer, loss=loss, metrics=[metric], jit_compile=jit_compile)
    # Made now rather than in Keras' first symbolic build: the process then peaks ~170 MB lower
    # (Ti/16, benchmarks/RESULTS.md "Training speed and memory").
    strategy = getattr(model, "distribute_strategy", None)  # TensorFlow only
    with strategy.scope() if strategy is not None else contextlib.nullcontext():
        optimizer.build(model.trainable_variables)
    return model


@keras.saving.register_keras_serializable(package="keras_vit")
class SparseSmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy with label smoothing for integer labels.

    Equal to `CategoricalCrossentropy(label_smoothing=...)` on one-hot labels,
    without materialising them in the input pipeline.

    Example:

    >>> loss = SparseSmoothedCrossentropy(0.1)
    >>> round(float(loss(np.array([0]), np.array([[0.9, 0.1]]))), 4)
    0.2152
    """

    def __init__(self, label_smoothing=0.1, from_logits=False, name="sparse_smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def call(self, y_true, y_pred):
        classes = ops.shape(y_pred)[-1]
        y_true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(
            y_true, y_pred, from_logits=self.from_logits, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing, "from_logits": self.from_logits}


def set_mixed_precision(mode):
    """Sets the global dtype policy before a model is built.

    Args:
        mode: `"auto"` (bfloat16 on TPUs and CPUs, float16 on GPUs), `"bf16"`,
            `"fp16"` or `"none"`/`None` (float32).

    Returns:
        The policy name that was set.
    """
    import tensorflow as tf

    if mode in (None, "none", "float32"):
        policy = "float32"
    elif mode == "auto":
        policy = "mixed_float16" if tf.config.list_physical_devices("GPU") else "mixed_bfloat16"
    elif mode in ("bf16", "bfloat16", "mixed_bfloat16"):
        policy = "mixed_bfloat16"
    elif mode in ("fp16", "float16", "mixed_float16"):
        policy = "mixed_float16"
    else:
        raise ValueError(f"`mode` must be 'auto', 'bf16', 'fp16' or 'none'. Received: mode={mode!r}")
    keras.mixed_precision.set_global_policy(policy)
    return policy


def keep_attention_softmax_in_float32(model):
    """Makes every attention softmax of a mixed-precision ViT compute in float32.

    Softmax over many tokens in (b)float16 loses the small probabilities; the
    usual mixed-precision practice keeps it, like the loss, in float32. The
    softmax layers (which hold no weights) get a float32 dtype policy in place.
    """
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, vit_layers.TransformerBlock) and hasattr(layer, "attention"):
            # The softmax layer casts its (b)float16 scores to its own compute dtype.
            layer.attention._softmax.dtype_policy = "float32"
    return model
