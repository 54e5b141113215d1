"""The benchmark scripts run end to end (tiny settings; no timing is asserted)."""

import os
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


def test_pipeline_benchmark_times_epochs_of_real_fashion_mnist():
    stdout = run_benchmark("pipeline.py", "--epochs", "2", "--max_examples", "1024")
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
