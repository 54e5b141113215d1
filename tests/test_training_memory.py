"""What the backward pass keeps, measured by TensorFlow's own allocator (`TF_CPU_ALLOCATOR_USE_BFC`).

Each of keras_vit's memory changes is undone in turn (as `benchmarks/ab.py` undoes it), in its own
process, and the peak tensor memory of one training step compared with everything in place: the
difference must be at least 80% of the tensors the change stops keeping. A change that silently
kept them again (for instance, a recomputation TensorFlow runs during the forward pass;
`keras_vit.compiling.after`) fails here.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest

BATCH, TOKENS, WIDTH, MLP_DIM, HEADS, BLOCKS = 16, 16 * 16 + 1, 64, 256, 2, 4
BASELINE_RUNS = 3

PEAK_SCRIPT = textwrap.dedent(
    """
    import contextlib, json, sys
    import numpy as np, keras, tensorflow as tf
    import keras_vit
    sys.path.insert(0, {benchmarks!r})
    import ab  # the same undoing as the speed comparisons

    change = sys.argv[1]
    model = keras_vit.ViT({blocks}, {width}, {mlp_dim}, {heads}, 4, input_shape=(64, 64, 3), classes=10)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", jit_compile=False)
    x = np.random.default_rng(0).uniform(0, 255, ({batch}, 64, 64, 3)).astype("float32")
    with ab.undone(change) if change != "nothing" else contextlib.nullcontext():
        model.train_on_batch(x, np.arange({batch}) % 10)  # traced here
    print(json.dumps(tf.config.experimental.get_memory_info("CPU:0")))
    """
).format(benchmarks=str(pathlib.Path(__file__).parents[1] / "benchmarks"), blocks=BLOCKS, width=WIDTH,
         mlp_dim=MLP_DIM, heads=HEADS, batch=BATCH)

# Bytes each change stops keeping, over the model's blocks (float32).
SAVED = {
    "mlp": BLOCKS * BATCH * TOKENS * MLP_DIM * 4,  # the GELU's output
    "attention_probabilities": BLOCKS * BATCH * HEADS * TOKENS * TOKENS * 4,
    "normalized_products": BLOCKS * 2 * BATCH * TOKENS * WIDTH * 4,  # both LayerNorms' outputs
}


@pytest.fixture(scope="module")
def peaks(tmp_path_factory):
    script = tmp_path_factory.mktemp("memory") / "peak.py"
    script.write_text(PEAK_SCRIPT)
    env = {**os.environ, "TF_CPU_ALLOCATOR_USE_BFC": "true", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    cache = {}

    def measure(undone):
        result = subprocess.run([sys.executable, str(script), undone], env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])["peak"]

    def peak(undone):
        if undone not in cache:
            # The executor's threads order ops differently from run to run, and with them the
            # transient peak: by up to 10 MB when other jobs share the cores. Every change is
            # compared with the baseline, so its least of a few runs is taken; a change that kept
            # its tensors again would raise all of them.
            cache[undone] = min(measure(undone) for _ in range(BASELINE_RUNS if undone == "nothing" else 1))
        return cache[undone]

    return peak


@pytest.mark.parametrize("change", sorted(SAVED))
def test_the_change_keeps_less_for_the_backward_pass(change, peaks):
    saved = peaks(change) - peaks("nothing")
    assert saved >= 0.8 * SAVED[change], (change, saved, SAVED[change])
