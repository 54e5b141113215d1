"""The ablation study: its arithmetic, and a real tiny study on Fashion-MNIST through the example script."""

import json
import os
import subprocess
import sys

import pytest

from keras_vit import ablations

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mean_std_is_the_sample_standard_deviation():
    assert ablations.mean_std([90.0]) == (90.0, 0.0)
    mean, std = ablations.mean_std([88.0, 90.0, 92.0])
    assert mean == 90.0 and std == pytest.approx(2.0)


def test_settings_are_checked_by_name():
    assert ablations.parse_settings(" none,relative ") == ["none", "relative"]
    with pytest.raises(ValueError, match="subset of .*'learned_2d'.*Received: 'learned,2d'"):
        ablations.parse_settings("learned,2d")
    with pytest.raises(ValueError):
        ablations.parse_settings("")


def test_table_has_one_row_per_setting_in_order():
    records = [
        dict(setting=s, seed=seed, accuracy=acc, loss=0.5, train_seconds=10.0, parameters=100)
        for s, seed, acc in [("relative", 0, 0.80), ("relative", 1, 0.84), ("none", 0, 0.70), ("none", 1, 0.70)]
    ]
    rows = ablations.summarize(records)
    assert [r["setting"] for r in rows] == ["relative", "none"]
    assert rows[0]["mean"] == pytest.approx(82.0) and rows[0]["std"] == pytest.approx(2.8284, abs=1e-4)
    text = ablations.table(records).splitlines()
    assert len(text) == 4 and "| Relative | 82.00 +- 2.83 | 2 |" in text[2] and "70.00 +- 0.00" in text[3]


@pytest.mark.slow
def test_example_runs_a_real_study_and_resumes_without_training_again(tmp_path):
    out = tmp_path / "study"
    command = [
        sys.executable, os.path.join(ROOT, "examples", "ablations.py"), "--settings=relative,gap", "--seeds=0,1",
        "--num_layers=1", "--hidden_size=16", "--mlp_dim=32", "--num_heads=2", "--patch_size=7",
        "--epochs=1", "--max_train_examples=512", "--max_eval_examples=256", "--batch_size=64",
        "--jit_compile=false", "--verbose=0", f"--output_dir={out}",
    ]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("done in") == 4
    report = json.loads((out / "ablations.json").read_text())
    assert [(r["setting"], r["seed"]) for r in report["runs"]] == [
        ("relative", 0), ("relative", 1), ("gap", 0), ("gap", 1)]
    for run in report["runs"]:
        assert 0.0 < run["accuracy"] <= 1.0 and os.path.exists(os.path.join(run["output_dir"], "model.keras"))
    # Different seeds give different models, hence (almost surely) different losses.
    assert report["runs"][0]["loss"] != report["runs"][1]["loss"]
    table = (out / "ablations.md").read_text()
    assert "| Relative |" in table and "| 1-D learned, GAP classifier |" in table
    # Started again, every run is read back from its eval.json.
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "done in" not in second.stdout
    assert (out / "ablations.md").read_text() == table
    bad = subprocess.run(command[:2] + ["--settings=learned,2d"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "Received: 'learned,2d'" in bad.stderr
