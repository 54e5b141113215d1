"""The benchmark scripts run end to end (tiny settings; no timing is asserted)."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import inference  # noqa: E402


def run_benchmark(script, *args):
    """Runs `benchmarks/<script>` with `args`; returns its standard output after checking it succeeded."""
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_flop_count_matches_the_published_figure():
    # ViT-B/16 at 224 needs 35.1 GFLOP per image forward (issue 7, counting a multiply-add as 2).
    assert inference.gflop_per_image("B/16", 224) == pytest.approx(35.1, abs=0.1)
    assert inference.gflop_per_image("B/16", 384) > 3 * inference.gflop_per_image("B/16", 224)


@pytest.mark.slow
def test_inference_benchmark_prints_a_row_per_implementation():
    stdout = run_benchmark("inference.py", "--variants", "Ti/16", "--batches", "1", "--rounds", "1", "--runs", "1",
                           "--warmup", "1", "--no-keras-hub")
    rows = [line for line in stdout.splitlines() if line.startswith("| Ti/16 |")]
    assert [row.split("|")[4].strip() for row in rows] == ["keras_vit", "keras_vit (XLA)", "timm (PyTorch)"]
    assert "matmul ceiling:" in stdout


@pytest.mark.slow
def test_training_benchmark_of_the_fashion_mnist_model():
    stdout = run_benchmark("training.py", "--variant", "fmnist", "--rounds", "1", "--runs", "1", "--warmup", "1",
                           "--no-keras-hub")
    assert "Fashion-MNIST demo model (4x64, MLP 256, patch 4) at 28, batch 128" in stdout
    rows = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")]
    assert rows[1:] == ["keras_vit", "keras_vit (XLA)", "timm (PyTorch)"]


@pytest.mark.slow
def test_training_benchmark_in_mixed_bfloat16():
    stdout = run_benchmark("training.py", "--variant", "fmnist", "--bf16", "--xla", "off", "--rounds", "1", "--runs",
                           "1", "--warmup", "1", "--no-keras-hub")
    assert "at 28, batch 128, AdamW, mixed bfloat16" in stdout
    rows = [line.split("|")[1:3] for line in stdout.splitlines() if line.startswith("| ")]
    assert [name.strip() for name, _ in rows[1:]] == ["keras_vit", "timm (PyTorch)"]
    assert all(float(rate) > 0 for _, rate in rows[1:])


@pytest.mark.slow
def test_hybrid_steps_prints_a_row_per_candidate():
    stdout = run_benchmark("hybrid_steps.py", "32/1,1/32/1/32/1", "56/1/32/1/32/2", "--batch", "4", "--runs", "1",
                           "--warmup", "1")
    rows = [line.split("|")[1:-1] for line in stdout.splitlines() if line.startswith("| ") and "input" not in line]
    assert [[cell.strip() for cell in row[:4]] for row in rows] == [["32", "1+1, 32", "1", "16"],
                                                                   ["56", "1, 32", "2", "49"]]
    assert all(float(row[5].replace(",", "")) > 0 for row in rows)


@pytest.mark.slow
def test_xla_dots_runs_each_setting_in_its_own_worker_and_checks_its_outputs():
    stdout = run_benchmark("xla_dots.py", "--variant", "fmnist", "--mode", "infer", "--batch", "2", "--settings",
                           "plain,xla,ynn", "--rounds", "1", "--runs", "1", "--warmup", "1", "--no-timm")
    rows = [[cell.strip() for cell in line.split("|")[1:-1]] for line in stdout.splitlines()
            if line.startswith("| ") and "implementation" not in line]
    assert [row[:2] for row in rows] == [["plain graph (no XLA)", "``"], ["XLA, its own products", "``"],
                                         ["XLA, products in YNNPACK", "`--xla_cpu_experimental_ynn_fusion_type=individual_dot`"]]
    differences = [float(row[5]) for row in rows]
    assert differences[0] == 0 and all(d < 1e-4 for d in differences)  # the same probabilities to float rounding


def test_xla_dots_names_an_unknown_setting():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "xla_dots.py"), "--settings", "xla,fast"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "unknown setting(s) ['fast']" in result.stderr and "ynn" in result.stderr


def test_closed_form_group_norm_matches_keras_and_its_gradient():
    # `--group_norm closed_form` must time the function Keras' GroupNormalization computes, and its true gradient:
    # forward against the Keras layer, gradients against TensorFlow differentiating the textbook formula.
    import numpy as np
    import tensorflow as tf
    from keras import layers

    import hybrid_steps

    rng = np.random.default_rng(0)
    x, weights = (tf.constant(rng.normal(2.0, 3.0, (2, 5, 5, 8)), tf.float32) for _ in range(2))
    gamma, beta = (tf.constant(rng.normal(1.0, 0.5, 8), tf.float32) for _ in range(2))
    keras_layer = layers.GroupNormalization(groups=4, epsilon=1e-5)
    keras_layer.build(x.shape)
    keras_layer.set_weights([gamma.numpy(), beta.numpy()])

    def textbook(x, gamma, beta):
        grouped = tf.reshape(x, (2, 5, 5, 4, 2))
        mean, variance = tf.nn.moments(grouped, axes=(1, 2, 4), keepdims=True)
        out = (grouped - mean) * tf.math.rsqrt(variance + 1e-5) * tf.reshape(gamma, (4, 2)) + tf.reshape(beta, (4, 2))
        return tf.reshape(out, x.shape)

    def value_and_grads(fn):
        with tf.GradientTape() as tape:
            tape.watch([x, gamma, beta])
            y = fn(x, gamma, beta)
            loss = tf.reduce_sum(y * weights)
        return [y, *tape.gradient(loss, [x, gamma, beta])]

    ours = value_and_grads(lambda x, gamma, beta: hybrid_steps.closed_form_group_norm(x, gamma, beta, 4, 1e-5))
    np.testing.assert_allclose(ours[0].numpy(), keras_layer(x).numpy(), atol=1e-5)
    for got, want in zip(ours, value_and_grads(textbook)):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)


@pytest.mark.slow
def test_hybrid_steps_without_group_norm_drops_its_parameters():
    counts = {}
    for kind in ("keras", "none"):
        stdout = run_benchmark("hybrid_steps.py", "32/1/32/1/32/1", "--batch", "2", "--runs", "1", "--warmup", "1",
                               "--group_norm", kind)
        assert f"stem GroupNorm: {kind}" in stdout
        row = [line.split("|")[1:-1] for line in stdout.splitlines() if line.startswith("| 32 ")][0]
        counts[kind] = int(row[4].replace(",", ""))
    # A scale and an offset per channel: the root's 32, and one bottleneck unit's 32, 32, 128 and projection's 128.
    assert counts["keras"] - counts["none"] == 2 * (32 + 32 + 32 + 128 + 128)


def test_matmul_bound_lists_every_product_of_the_pass():
    import matmul_bound
    import peers

    row = peers.architecture("B/16")
    forward = matmul_bound.products(row, 224, 2, "infer")
    assert sum(map(matmul_bound.gflop, forward)) == pytest.approx(2 * inference.gflop_per_image("B/16", 224))
    # Training: every product again for each operand's gradient (the image's excepted), and the scores recomputed.
    train = matmul_bound.products(row, 224, 2, "train")
    patch = 2 * 196 * 768 * 768 * 2 / 1e9
    scores = 2 * 2 * 12 * 197 * 64 * 197 * 12 / 1e9
    assert sum(map(matmul_bound.gflop, train)) == pytest.approx(3 * 2 * inference.gflop_per_image("B/16", 224)
                                                                - patch + scores)


def test_matmul_bound_times_both_libraries():
    stdout = run_benchmark("matmul_bound.py", "--variant", "fmnist", "--size", "28", "--batch", "2", "--rounds", "1",
                           "--runs", "1", "--warmup", "0")
    rows = [line.split("|")[1:-1] for line in stdout.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 21 and all(float(ms) > 0 for row in rows for ms in row[4::2])  # each library's ms
    for library in ("TensorFlow", "PyTorch"):
        assert re.search(rf"^{library}: matmuls alone \d+ ms per pass -> at most [\d.]+ img/s", stdout, re.M)


def test_milliseconds_keeps_the_digits_of_a_few_microseconds():
    import timing

    # A table cell of 0.0 for an operation that took 4 microseconds read as "not timed" (and failed a test here).
    assert [timing.milliseconds(s) for s in (2.5, 0.0123, 4.2e-6)] == ["2500.0", "12.3", "0.0042"]


def test_line_worker_passes_over_chatter_and_names_a_stopped_worker():
    from workers import LineWorker

    echo = ("import json, sys\nprint('a library says hello')\nfor line in sys.stdin:\n"
            "    print('chatter'); print(json.dumps({'got': line.strip()}), flush=True)\n    if line.strip() == 'stop': sys.exit(3)")
    worker = LineWorker([sys.executable, "-c", echo], dict(os.environ), "the echo stopped with status {status}")
    assert worker.ask("one") == {"got": "one"}
    assert worker.ask("two") == {"got": "two"}
    assert worker.ask("stop") == {"got": "stop"}
    with pytest.raises(RuntimeError, match="the echo stopped with status 3"):
        worker.reply()


def test_column_sums_prints_the_three_ways_per_shape():
    stdout = run_benchmark("column_sums.py", "--rows", "64", "--widths", "8,16", "--runs", "1")
    rows = [line.split("|")[1:-1] for line in stdout.splitlines() if line.startswith("| 64 x")]
    assert [row[0].strip() for row in rows] == ["64 x 8", "64 x 16"]
    assert all(float(cell) > 0 for row in rows for cell in row[1:])


@pytest.mark.slow
def test_profile_prints_op_types_by_self_time(tmp_path):
    stdout = run_benchmark("op_profile.py", "--variant", "Ti/16", "--batch", "1", "--passes", "1", "--bf16",
                           "--logdir", str(tmp_path / "trace"))
    rows = [line.split("|")[1].strip() for line in stdout.splitlines() if line.startswith("| ")][2:]
    assert len(rows) >= 5 and any("MatMul" in row for row in rows) and "IDLE" not in rows
    assert list((tmp_path / "trace").rglob("*.xplane.pb")), "the raw trace stays for TensorBoard"


@pytest.mark.slow
def test_memory_benchmark_splits_the_peak():
    stdout = run_benchmark("memory.py", "--variant", "Ti/16", "--size", "32", "--batches", "1", "4",
                           "--steps", "1")
    rows = [line.split("|")[1:-1] for line in stdout.splitlines() if line.startswith("| ")][1:]
    names = [row[0].strip() for row in rows]
    assert names == ["keras_vit"] * 2 + ["keras_vit: fixed part", "keras_vit: per image"] + \
        ["timm (PyTorch)"] * 2 + ["timm (PyTorch): fixed part", "timm (PyTorch): per image"]
    keras_row = [float(cell) for cell in rows[1][1:]]  # batch, import, build, peak, peak - build, tensors
    assert keras_row[0] == 4 and keras_row[3] >= keras_row[2] >= keras_row[1] > 100 and keras_row[5] > 0


@pytest.mark.parametrize("mode", [[], ["--reshuffle"]])
def test_pipeline_benchmark_times_epochs_of_real_fashion_mnist(mode):
    stdout = run_benchmark("pipeline.py", "--epochs", "2", "--max_examples", "1024", *mode)
    rows = [line.split("|") for line in stdout.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert [int(row[2]) for row in rows] == [8, 8]  # 1024 images in batches of 128
    assert "median CPU seconds per epoch after the first:" in stdout


@pytest.mark.slow
def test_edge_benchmark_times_each_file_next_to_keras(tmp_path):
    stdout = run_benchmark("edge.py", "--variant", "Ti/16", "--size", "32", "--modes", "float32,dynamic",
                           "--rounds", "1", "--runs", "1", "--dir", str(tmp_path))
    rows = [line.split("|")[1:-1] for line in stdout.splitlines() if line.startswith("| ")][1:]
    assert [row[0].strip() for row in rows] == ["Keras", "float32", "dynamic"]
    assert rows[0][3].strip() == "1.00x" and all(float(row[2]) > 0 for row in rows)
    assert sorted(p.name for p in tmp_path.glob("*.tflite")) == ["Ti16_32_dynamic.tflite", "Ti16_32_float32.tflite"]
    # A second run reuses the files in --dir instead of converting again.
    assert "wrote" not in run_benchmark("edge.py", "--variant", "Ti/16", "--size", "32", "--modes", "float32",
                                        "--rounds", "0", "--dir", str(tmp_path))
