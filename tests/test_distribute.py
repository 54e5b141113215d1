"""Strategies for real: two logical CPUs, a two-process cluster, and resume after SIGKILL.

Each scenario runs in a subprocess, since logical devices and collective ops
are fixed once TensorFlow starts.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from keras_vit import distribute

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def write_folder_dataset(root, per_class=16, size=16):
    """Two classes that differ in brightness, as PNG files."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    for label, name in enumerate(("dark", "light")):
        os.makedirs(os.path.join(root, name))
        for i in range(per_class):
            pixels = rng.integers(0, 100, (size, size, 3)) + 150 * label
            png = tf.io.encode_png(pixels.astype("uint8")).numpy()
            with open(os.path.join(root, name, f"{i}.png"), "wb") as f:
                f.write(png)
    return root


TINY_FLAGS = [
    "--num_layers=1", "--hidden_size=16", "--mlp_dim=32", "--num_heads=2", "--patch_size=8",
    "--image_size=16", "--batch_size=8", "--warmup_epochs=0", "--verbose=2", "--jit_compile=false",
]

RUN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import keras, numpy as np
    from keras_vit import cli_train

    result_path, sleep_after = sys.argv[1], int(sys.argv[2])
    argv = ["train"] + sys.argv[3:]

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            with open(result_path + ".epochs", "a") as f:
                f.write(f"{epoch}\\n")

        def on_epoch_end(self, epoch, logs=None):
            # After BackupAndRestore (an earlier callback) saved this epoch:
            # pretend to keep working so the test can kill us mid-run.
            if epoch + 1 == sleep_after:
                open(result_path + ".ready", "w").close()
                time.sleep(600)

    model, history, results = cli_train.run(cli_train._parse(argv), callbacks=[Record()])
    np.savez(result_path, *[np.asarray(w) for w in model.get_weights()])
    """
)


def run_script(tmp_path, name, args, env=None, sleep_after=0):
    script = tmp_path / "run.py"
    script.write_text(RUN_SCRIPT)
    result = str(tmp_path / name)
    command = [sys.executable, str(script), result, str(sleep_after), *args]
    return subprocess.Popen(command, env=env or ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), result


def finish(process, timeout=240):
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_resolve_default_and_bad_names(monkeypatch):
    assert distribute.resolve_strategy("default").num_replicas_in_sync == 1
    with pytest.raises(ValueError, match="Received: strategy='gpu'"):
        distribute.resolve_strategy("gpu")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.resolve_strategy("multiworker")
    with pytest.raises(RuntimeError, match="no reachable TPU"):
        distribute.resolve_strategy("tpu")


def test_batch_and_learning_rate_scaling():
    strategy = distribute.resolve_strategy("default")
    assert distribute.global_batch_size(32, strategy, per_replica=True) == 32
    assert distribute.scale_learning_rate(0.03, 1024, 512) == pytest.approx(0.06)
    assert distribute.scale_learning_rate(0.03, 1024) == 0.03
    with pytest.raises(ValueError, match="base_batch_size=0"):
        distribute.scale_learning_rate(0.03, 1024, 0)


MIRRORED_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, keras_vit
    from keras_vit import data, distribute, training

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 16, 16, 1)).astype("uint8")
    labels = rng.integers(0, 10, 64)
    source = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels}).repeat()

    def train(strategy):
        keras.utils.set_random_seed(1)
        dataset = data.distributed(
            strategy, lambda b, ctx: data.pipeline(source, 16, b, 10, drop_remainder=True, input_context=ctx), 16)
        with strategy.scope():
            model = keras_vit.ViT(1, 16, 32, 2, 8, input_shape=(16, 16, 3), classes=10)
            training.compile_model(model, total_steps=8, warmup_steps=2, learning_rate=1e-2, jit_compile=False)
        # Known steps: an unknown-length distributed dataset makes Keras run one
        # extra, empty step at the end of an epoch, which advances the schedule.
        model.fit(dataset, epochs=2, steps_per_epoch=4, verbose=0)
        return model.get_weights()

    mirrored = distribute.resolve_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2, mirrored.num_replicas_in_sync
    two = train(mirrored)
    one = train(distribute.resolve_strategy("default"))
    worst = max(float(np.max(np.abs(a - b))) for a, b in zip(one, two))
    print("max difference", worst)
    assert worst < 1e-4, worst
    """
)


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus_matches_one_device(tmp_path):
    # The same 8 steps with a global batch of 16, split 8 + 8 over two
    # replicas, must give the weights of one device seeing all 16.
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert "max difference" in result.stdout


@pytest.mark.slow
def test_two_worker_cluster_trains_to_identical_weights(tmp_path):
    folder = write_folder_dataset(str(tmp_path / "images"))
    ports = free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**ENV, "TF_CONFIG": json.dumps(config)}
        # --average_last: each worker writes its epochs' weights and takes their mean, in step with the other.
        args = [f"--dataset={folder}", "--strategy=multiworker", "--epochs=2", "--average_last=2",
                f"--output_dir={tmp_path / 'out'}", *TINY_FLAGS]
        processes.append(run_script(tmp_path, f"worker{index}", args, env=env))
    outputs = [finish(p) for p, _ in processes]
    assert "2 replica(s)" in outputs[0]
    first, second = (np.load(result + ".npz") for _, result in processes)
    assert len(first.files) == len(second.files) > 0
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])
    # Only the chief writes the final model into the shared output folder.
    assert os.path.exists(tmp_path / "out" / "model.keras")
    assert json.loads((tmp_path / "out" / "eval.json").read_text())["averaged_epochs"] == [1, 2]
    assert sorted(os.listdir(tmp_path / "out" / "checkpoints")) == [
        "epoch_001.weights.h5", "epoch_002.weights.h5", "latest.weights.h5"]


@pytest.mark.slow
def test_sigkill_then_restart_resumes_from_last_epoch(tmp_path):
    folder = write_folder_dataset(str(tmp_path / "images"))
    args = [f"--dataset={folder}", "--eval_split=none", "--epochs=4", f"--output_dir={tmp_path / 'out'}",
            *TINY_FLAGS]
    process, result = run_script(tmp_path, "run", args, sleep_after=2)
    deadline = time.time() + 180
    while not os.path.exists(result + ".ready"):
        assert process.poll() is None, process.communicate()[0][-4000:]
        assert time.time() < deadline, "the first run never finished epoch 2"
        time.sleep(0.5)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with open(result + ".epochs") as f:
        assert f.read().split() == ["0", "1"]

    # Other settings would carry the backup on as another run: refused, and nothing lost.
    other, _ = run_script(tmp_path, "other", [a.replace("--epochs=4", "--epochs=5") for a in args])
    refusal, _ = other.communicate(timeout=240)
    assert other.returncode != 0 and "epochs=4 (now 5)" in refusal, refusal[-2000:]

    restarted, _ = run_script(tmp_path, "run", args)
    output = finish(restarted)
    with open(result + ".epochs") as f:
        epochs = f.read().split()
    # Killed after epoch 2 of 4: the restart trains only epochs 3 and 4.
    assert epochs == ["0", "1", "2", "3"], (epochs, output[-2000:])
    # The history holds all four epochs, those before the kill too; the finished run's backup is gone.
    history = json.load(open(tmp_path / "out" / "history.json"))
    assert len(history["loss"]) == 4
    assert not os.path.exists(tmp_path / "out" / "backup")
