"""The peers the benchmarks measure keras_vit against, built with the same architecture.

- keras-hub's ViT (`keras_hub.models.ViTImageClassifier` on a `ViTBackbone`), in this process;
- timm's `VisionTransformer` on PyTorch's CPU build, in a worker subprocess: PyTorch and TensorFlow
  loaded into one process can crash, and a separate process also keeps their thread pools apart.

All models have random weights: speed does not depend on them.
"""

import json
import os
import sys
import textwrap

import keras
import numpy as np
from timing import median_seconds
from workers import LineWorker

from keras_vit.cli_demo import PLAIN_DEFAULTS
from keras_vit.cli_train import SMALL_VIT
from keras_vit.variants import VARIANTS, canonical_name

# The plain ViT of `keras-vit demo` (28x28 inputs, 10 classes), as a variant row: timm and keras-hub
# have no hybrid of this shape to compare with.
FASHION_MNIST = {name: PLAIN_DEFAULTS[name] for name in SMALL_VIT}


def architecture(variant):
    """The table row of a variant name, or `FASHION_MNIST` for `"fmnist"`; a dict is returned as is."""
    if isinstance(variant, dict):
        return dict(variant)
    if variant == "fmnist":
        return dict(FASHION_MNIST)
    return dict(VARIANTS[canonical_name(variant)])


def keras_hub_classifier(variant, image_size, classes=1000):
    """keras-hub's ViT classifier of a variant (class token, 1-D learned position embeddings)."""
    import keras_hub

    row = architecture(variant)
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(image_size, image_size, 3), patch_size=row["patch_size"], num_layers=row["num_layers"],
        num_heads=row["num_heads"], hidden_dim=row["hidden_size"], mlp_dim=row["mlp_dim"],
    )
    return keras_hub.models.ViTImageClassifier(backbone, num_classes=classes, activation="softmax")


TORCH_WORKER = textwrap.dedent(
    """
    import json, statistics, sys, time
    import torch, timm

    models = {}
    for line in sys.stdin:
        task = json.loads(line)
        key = (task["timm_name"], task["image_size"], task.get("bf16", False))
        if key not in models and task.get("arch"):
            from timm.models.vision_transformer import VisionTransformer
            arch = task["arch"]
            models[key] = VisionTransformer(
                img_size=task["image_size"], patch_size=arch["patch_size"], num_classes=task["classes"],
                embed_dim=arch["hidden_size"], depth=arch["num_layers"], num_heads=arch["num_heads"],
                mlp_ratio=arch["mlp_dim"] / arch["hidden_size"]).eval()
        if key not in models:
            models[key] = timm.create_model(task["timm_name"], pretrained=False, img_size=task["image_size"],
                                            num_classes=task["classes"]).eval()
        model = models[key]
        x = torch.rand(task["batch"], 3, task["image_size"], task["image_size"])
        times = []
        if task.get("train"):
            # One AdamW step per run, clipping at global norm 1 as the paper's recipe; with bf16, the forward
            # pass and the loss under bfloat16 autocast (float32 weights and optimizer, as Keras' mixed_bfloat16).
            model.train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
            labels = torch.randint(0, task["classes"], (task["batch"],))
            for i in range(task["warmup"] + task["runs"]):
                start = time.perf_counter()
                optimizer.zero_grad()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=key[2]):
                    loss = torch.nn.functional.cross_entropy(model(x), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                if i >= task["warmup"]:
                    times.append(time.perf_counter() - start)
            model.eval()
        else:
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=key[2]):
                for i in range(task["warmup"] + task["runs"]):
                    start = time.perf_counter()
                    model(x)
                    if i >= task["warmup"]:
                        times.append(time.perf_counter() - start)
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"seconds": statistics.median(times), "peak_rss": peak}), flush=True)
    """
)

TIMM_NAMES = {
    "Ti/16": "vit_tiny_patch16_224", "S/16": "vit_small_patch16_224", "S/32": "vit_small_patch32_224",
    "B/8": "vit_base_patch8_224", "B/16": "vit_base_patch16_224", "B/32": "vit_base_patch32_224",
    "L/16": "vit_large_patch16_224", "L/32": "vit_large_patch32_224", "H/14": "vit_huge_patch14_224",
}


class TimmWorker(LineWorker):
    """A PyTorch subprocess that times timm's ViT on request: `median_seconds(variant, ...)`."""

    def __init__(self):
        super().__init__([sys.executable, "-c", TORCH_WORKER], dict(os.environ, CUDA_VISIBLE_DEVICES=""),
                         "The timm worker stopped (exit status {status}); is timm installed?")

    def median_seconds(self, variant, image_size, batch, runs, warmup, classes=1000, bf16=False, train=False):
        """Median seconds of a forward pass (or, with `train=True`, of one AdamW training step).

        `variant` is a variant name, `"fmnist"` or an architecture row; rows that are not a
        named variant are built with timm's `VisionTransformer` class.
        """
        named = isinstance(variant, str) and variant != "fmnist"
        task = dict(timm_name=TIMM_NAMES[canonical_name(variant)] if named else json.dumps(architecture(variant)),
                    arch=None if named else architecture(variant), image_size=image_size, batch=batch,
                    runs=runs, warmup=warmup, classes=classes, bf16=bf16, train=train)
        reply = self.ask(json.dumps(task))
        self.peak_rss = reply["peak_rss"]
        return reply["seconds"]


def keras_forward(model, batch, jit_compile=False):
    """A callable that runs one forward pass of a Keras model on a fixed random batch, in a compiled
    `tf.function`, and returns its output as a NumPy array."""
    import tensorflow as tf

    shape = (batch,) + tuple(model.input_shape[1:])
    x = tf.constant(np.random.default_rng(0).uniform(0, 255, shape).astype("float32"))
    call = tf.function(lambda images: model(images, training=False), jit_compile=jit_compile)
    return lambda: keras.ops.convert_to_numpy(call(x))


def keras_median_seconds(model, batch, runs, warmup, jit_compile=False):
    """Median wall time of one forward pass of a Keras model in a compiled `tf.function`."""
    return median_seconds(keras_forward(model, batch, jit_compile), runs, warmup)


def keras_train_step(model, batch, classes=1000, jit_compile=True, ours=False):
    """A callable that runs one `train_on_batch` step on a fixed random batch, AdamW with global-norm
    clipping at 1, and returns the loss.

    With `ours`, the optimizer is keras_vit's (`keras_vit.optimizers.AdamW`: one fused kernel per
    variable on TensorFlow) and is built at compile time, as `keras_vit.training.compile_model`
    does; otherwise it is Keras' `AdamW`, built by Keras on the first step.
    """
    from keras_vit import optimizers

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (batch,) + tuple(model.input_shape[1:])).astype("float32")
    y = rng.integers(0, classes, (batch,))
    optimizer = (optimizers.AdamW if ours else keras.optimizers.AdamW)(1e-4, weight_decay=0.05, global_clipnorm=1.0)
    model.compile(
        optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=False),
        jit_compile=jit_compile,
    )
    if ours:
        optimizer.build(model.trainable_variables)
    return lambda: model.train_on_batch(x, y)


def keras_train_step_seconds(model, batch, runs, warmup, classes=1000, jit_compile=True, ours=False):
    """Median seconds of one training step of `keras_train_step` (which see); the model is compiled anew."""
    return median_seconds(keras_train_step(model, batch, classes, jit_compile, ours), runs, warmup)
