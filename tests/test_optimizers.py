"""The recipes' optimizers: fused TensorFlow updates against Keras' own.

Each fused optimizer and its Keras original start from the same variables
and take the same gradients; after several steps the updates (variables minus
their start) and the slots must agree. The tolerance is rtol 1e-4: Adam's
kernel forms `1 - beta_2` in float32 (1 - 0.999f = 0.00099998713, 1.3e-5
below Keras' 0.001 from Python arithmetic), which moves the second moment by
that much and the update by half of it; the momentum kernel agrees to rounding
(rtol 1e-5). atol is two float32 ulps of the largest value in the array.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_vit import optimizers, training

SHAPES = [(6, 5), (5,), (3, 2, 4)]


def run(optimizer, steps=4, jit_compile=False, sparse=False):
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype("float32"), name=f"w{i}") for i, s in enumerate(SHAPES)]
    variables.append(keras.Variable(rng.normal(size=(4,)).astype("float32"), name="bias"))
    grads = [[rng.normal(size=v.shape).astype("float32") for v in variables] for _ in range(steps)]
    optimizer.build(variables)
    if isinstance(optimizer, keras.optimizers.AdamW):
        optimizer.exclude_from_weight_decay(var_list=variables[-1:])

    @tf.function(jit_compile=jit_compile)
    def apply(gs):
        optimizer.apply(gs, variables)

    for gs in grads:
        gs = [tf.constant(g) for g in gs]
        if sparse:
            gs[0] = tf.IndexedSlices(gs[0][:2], tf.constant([1, 4]), tf.constant(SHAPES[0]))
        apply(gs)
    return [v.numpy() for v in variables] + [v.numpy() for v in optimizer.variables[2:]]


def schedule():
    return training.WarmupDecay(0.05, total_steps=6, warmup_steps=2)


CASES = {
    "adamw": lambda cls: cls(learning_rate=schedule(), weight_decay=0.3, global_clipnorm=1.0),
    "adam": lambda cls: cls(learning_rate=schedule(), epsilon=1e-3),
    "sgd": lambda cls: cls(learning_rate=schedule(), momentum=0.9),
    "sgd_nesterov": lambda cls: cls(learning_rate=0.1, momentum=0.9, nesterov=True),
}
CLASSES = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD", "sgd_nesterov": "SGD"}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_fused_updates_match_keras(case, jit_compile):
    name = CLASSES[case]
    fused = run(CASES[case](getattr(optimizers, name)), jit_compile=jit_compile)
    keras_own = run(CASES[case](getattr(keras.optimizers, name)), jit_compile=jit_compile)
    start = run(CASES[case](getattr(optimizers, name)), steps=0)
    assert_same_updates(fused, keras_own, start)


def assert_same_updates(fused, keras_own, start, rtol=1e-4):
    assert len(fused) == len(keras_own) == len(start) >= len(SHAPES) + 1
    for a, b, s in zip(fused, keras_own, start):
        assert np.abs(b - s).max() > 0  # every variable and slot moved
        ulps = 2 * np.spacing(np.abs(b).max())
        np.testing.assert_allclose(a - s, b - s, rtol=rtol, atol=ulps)


def test_weight_decay_also_on_the_paths_keras_updates():
    # SGD without momentum and sparse gradients take Keras' own update; decay must still apply.
    for make in (lambda cls: cls(learning_rate=0.1, weight_decay=0.5),
                 lambda cls: cls(learning_rate=0.1, momentum=0.9, weight_decay=0.5)):
        for sparse in (False, True):
            fused = run(make(optimizers.SGD), sparse=sparse)
            keras_own = run(make(keras.optimizers.SGD), sparse=sparse)
            assert_same_updates(fused, keras_own, run(make(optimizers.SGD), steps=0), rtol=1e-5)


def test_each_update_is_one_kernel():
    variables = [keras.Variable(np.ones(s, "float32")) for s in SHAPES]
    counts = {}
    for module in (optimizers, keras.optimizers):
        optimizer = module.AdamW(learning_rate=schedule(), weight_decay=0.1, global_clipnorm=1.0)
        optimizer.build(variables)
        graph = tf.function(lambda gs: optimizer.apply(gs, variables)).get_concrete_function(
            [tf.TensorSpec(s, "float32") for s in SHAPES]).graph
        ops = [op.type for op in graph.get_operations()]
        counts[module.__name__] = len(ops)
        if module is optimizers:
            assert ops.count("ResourceApplyAdam") == len(SHAPES)
    # Keras' written-out updates, and the schedule evaluated again for each variable's decay.
    assert counts["keras_vit.optimizers"] < counts["keras.optimizers"] / 2, counts


def test_compile_model_builds_the_optimizer():
    import keras_vit

    model = keras_vit.ViT(1, 16, 32, 2, 8, input_shape=(16, 16, 3), classes=3)
    training.compile_model(model, total_steps=10, warmup_steps=0)
    assert model.optimizer.built and isinstance(model.optimizer, optimizers.AdamW)
    assert len(model.optimizer.variables) == 1 + 2 * len(model.trainable_variables)  # iterations, m and v
    x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    model.train_on_batch(x, np.arange(4) % 3)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
