"""Recipes: schedule values, clipping, weight-decay exclusion, losses, a real short run."""

import math
import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import cli, cli_train, data, training


def tiny(**kwargs):
    return keras_vit.ViT(1, 16, 32, 2, 8, input_shape=(16, 16, 3), classes=10, **kwargs)


@pytest.mark.parametrize(
    "decay, step, expected",
    [
        ("cosine", 0, 0.0),
        ("cosine", 5, 0.5),
        ("cosine", 10, 1.0),
        ("cosine", 55, 0.5),  # Half-way through the decay: cos(pi/2).
        ("cosine", 32.5, 0.5 * (1 + math.cos(math.pi / 4))),
        ("cosine", 100, 0.0),
        ("cosine", 500, 0.0),
        ("linear", 55, 0.5),
        ("linear", 77.5, 0.25),
        ("linear", 100, 0.0),
    ],
)
def test_warmup_decay_values(decay, step, expected):
    schedule = training.WarmupDecay(1.0, total_steps=100, warmup_steps=10, decay=decay)
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-6)


def test_schedule_end_value_serialization_and_errors():
    schedule = training.WarmupDecay(2.0, 20, 0, "linear", end=1.0)
    assert float(schedule(0)) == pytest.approx(2.0)
    assert float(schedule(20)) == pytest.approx(1.0)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert float(clone(10)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="decay='step'"):
        training.WarmupDecay(1.0, 10, decay="step")
    with pytest.raises(ValueError, match="warmup_steps=20"):
        training.WarmupDecay(1.0, 10, warmup_steps=20)


def test_global_norm_clipping_bounds_the_update():
    variables = [keras.Variable(np.zeros(3, "float32")), keras.Variable(np.zeros((2, 2), "float32"))]
    optimizer = training.create_optimizer("sgd", 1.0, total_steps=10, momentum=0.0, weight_decay=0.0)
    grads = [np.full(3, 10.0, "float32"), np.full((2, 2), -10.0, "float32")]
    optimizer.apply(grads, variables)
    update = np.concatenate([np.ravel(v.numpy()) for v in variables])
    assert np.linalg.norm(update) == pytest.approx(1.0, rel=1e-5)
    # Direction preserved: clipping scales the whole gradient.
    np.testing.assert_allclose(update / np.linalg.norm(update), -np.concatenate([g.ravel() for g in grads]) / np.linalg.norm(np.concatenate([g.ravel() for g in grads])), rtol=1e-5)


def test_weight_decay_skips_norms_biases_and_embeddings():
    model = tiny()
    optimizer = training.create_optimizer("adamw", 0.1, total_steps=10, weight_decay=0.5, model=model)
    for v in model.trainable_variables:
        v.assign(np.ones(v.shape, "float32"))
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    optimizer.apply(zeros, model.trainable_variables)
    decayed = {v.path for v in model.trainable_variables if not np.allclose(v.numpy(), 1.0)}
    kept = {v.path for v in model.trainable_variables} - decayed
    # Adam's step is zero for zero gradients: only weight decay (1 - 0.1 * 0.5) moved kernels.
    for v in model.trainable_variables:
        if v.path in decayed:
            np.testing.assert_allclose(v.numpy(), 0.95, rtol=1e-6)
    assert all(p.endswith("kernel") for p in decayed), sorted(decayed)
    assert any("query/kernel" in p for p in decayed) and any("head/kernel" in p for p in decayed)
    expected_kept = ("bias", "gamma", "beta", "cls", "pos_embedding")
    assert all(p.endswith(expected_kept) for p in kept), sorted(kept)
    assert any("query/bias" in p for p in kept) and any("LayerNorm_0/gamma" in p for p in kept)


def test_optimizer_choices_and_errors():
    assert isinstance(training.create_optimizer("adam", weight_decay=0.0), keras.optimizers.Adam)
    with pytest.raises(ValueError, match="optimizer='sgd', weight_decay=0.1"):
        training.create_optimizer("sgd", weight_decay=0.1)
    with pytest.raises(ValueError, match="optimizer='lamb'"):
        training.create_optimizer("lamb")
    with pytest.raises(ValueError, match="recipe='big'"):
        training.compile_model(tiny(), "big")
    with pytest.raises(ValueError, match="momentum"):
        training.compile_model(tiny(), "finetune", momentum=0.5)


def test_sparse_label_smoothing_matches_one_hot():
    labels = np.array([2, 0])
    probabilities = np.array([[0.1, 0.2, 0.7], [0.5, 0.3, 0.2]], "float32")
    sparse = training.SparseSmoothedCrossentropy(0.2)(labels, probabilities)
    dense = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)(np.eye(3)[labels], probabilities)
    assert float(sparse) == pytest.approx(float(dense), rel=1e-6)


def test_recipes_compile_and_fit_save_and_load(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 16, 16, 3)).astype("float32")
    y = rng.integers(0, 10, 32)
    for recipe in ("pretrain", "finetune"):
        model = tiny()
        training.compile_model(model, recipe, total_steps=8, label_smoothing=0.1, warmup_steps=2)
        assert model.optimizer.global_clipnorm == 1.0
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    assert isinstance(model.optimizer, keras.optimizers.SGD) and model.optimizer.momentum == 0.9
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, training.SGD)
    np.testing.assert_allclose(loaded.predict(x[:2], verbose=0), model.predict(x[:2], verbose=0), atol=1e-6)


def test_mixed_precision_keeps_attention_softmax_in_float32():
    try:
        assert training.set_mixed_precision("bf16") == "mixed_bfloat16"
        model = training.keep_attention_softmax_in_float32(tiny())
        block = model.get_layer("encoderblock_0")
        assert block.attention._softmax.compute_dtype == "float32"
        assert block.attention.compute_dtype == "bfloat16"
        _, scores = block(np.ones((1, 5, 16), "float32"), return_attention_scores=True)
        assert keras.backend.standardize_dtype(scores.dtype) == "float32"
        with pytest.raises(ValueError, match="mode='fp8'"):
            training.set_mixed_precision("fp8")
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_short_real_fashion_mnist_run_beats_70_percent(tmp_path):
    # 300 steps of a 2-layer ViT (patch 7) on the real training set, scored
    # on all 10,000 real test images.
    values = cli_train._parse([
        "train", "--num_layers=2", "--hidden_size=64", "--mlp_dim=128", "--num_heads=4", "--patch_size=7",
        "--epochs=3", "--steps_per_epoch=100", "--batch_size=128", "--learning_rate=2e-3", "--warmup_epochs=0.5",
        "--crop_area_min=1", f"--output_dir={tmp_path}", "--verbose=0",
    ])
    model, history, results = cli_train.run(values)
    assert results["accuracy"] > 0.70, results
    assert os.path.exists(tmp_path / "model.keras") and os.path.exists(tmp_path / "checkpoints" / "latest.weights.h5")
    assert len(history.history["val_accuracy"]) == 3


def test_resnet_flags_build_a_hybrid_and_bad_stages_are_named():
    values = cli_train._parse(["train", "--num_layers=1", "--hidden_size=32", "--mlp_dim=64", "--num_heads=2",
                               "--patch_size=1", "--resnet=1,1", "--resnet_width=32", "--image_size=32"])
    model = cli_train.build_model(values, 10)
    stem = model.get_layer("resnet")
    assert stem.num_layers == (1, 1) and stem.width == 32
    # Root stride 4 and one more stage: 32x32 pixels -> 4x4 positions, 16 tokens and the class token.
    assert tuple(model.get_layer("posembed_input").weights[0].shape) == (1, 17, 32)
    assert cli_train.build_model(cli_train.with_flags(values, resnet=[]), 10).get_layer("embedding").weights[0].shape == (1, 1, 3, 32)
    with pytest.raises(ValueError, match=r"stage depths.*Received: resnet=\{'num_layers': \['x'\]"):
        cli_train.build_model(cli_train.with_flags(values, resnet=["x"]), 10)


def test_init_weights_give_a_custom_model_the_files_architecture(tmp_path, capsys):
    """examples/fine_tune.py from the shipped hybrid: its stem, depth, width and heads, at a new size."""
    source = keras_vit.ViT(2, 48, 96, 3, 1, input_shape=(28, 28, 3), classes=10, resnet=dict(num_layers=(2,), width=32))
    source.save(tmp_path / "hybrid.keras")
    values = cli_train._parse(["train", f"--init_weights={tmp_path / 'hybrid.keras'}", "--image_size=56"])
    model = cli_train.build_model(values, 10)
    assert "2 layers, width 48, MLP 96, 3 heads, patch 1, ResNet stem" in capsys.readouterr().out
    assert model.get_layer("resnet").num_layers == (2,) and model.get_layer("resnet").width == 32
    assert model.count_params() - source.count_params() == (14 * 14 - 7 * 7) * 48  # only the position table grew
    report = keras_vit.load_weights(model, str(tmp_path / "hybrid.keras"))
    assert report["skipped"] == [] and report["resampled"][:2] == ((1, 50, 48), (1, 197, 48))
    plain = cli_train.build_model(cli_train.with_flags(values, init_weights=None), 10)  # the flags' own ViT
    assert plain.count_params() != model.count_params() and "resnet" not in [layer.name for layer in plain.layers]


def test_architecture_flags_that_contradict_the_init_weights_file_are_refused(tmp_path, capsys):
    """Flags given on the command line that ask for another architecture than the file's fail before any
    work, naming each flag and the file's value; flags equal to the file's, and defaults, pass."""
    source = keras_vit.ViT(2, 48, 96, 3, 1, input_shape=(28, 28, 3), classes=10, resnet=dict(num_layers=(2,), width=32))
    path = tmp_path / "hybrid.keras"
    source.save(path)
    agreeing = cli_train._parse(["train", f"--init_weights={path}", "--num_layers=2", "--resnet=2", "--resnet_width=32"])
    assert cli_train.build_model(agreeing, 10).count_params() == source.count_params()
    output = tmp_path / "run"
    code = cli.main(["keras-vit", "train", f"--init_weights={path}", "--num_layers=4", "--hidden_size=48",
                     "--resnet=3", f"--output_dir={output}"])
    error = capsys.readouterr().err
    assert code == 1
    assert "--num_layers=4" in error and "num_layers=2" in error and "--resnet=3 " in error and "resnet=2)" in error, error
    assert "hidden_size" not in error  # given, but equal to the file's
    assert not output.exists()
    code = cli.main(["keras-vit", "pretrain", f"--init_weights={path}", "--num_layers=4", "--max_train_examples=256",
                     f"--output_dir={output}"])
    assert code == 1 and "keras-vit pretrain: --init_weights=" in capsys.readouterr().err
    assert not output.exists()
    plain = keras_vit.ViT(1, 16, 32, 2, 7, input_shape=(28, 28, 3), classes=10)
    plain.save(tmp_path / "plain.keras")
    with pytest.raises(cli_train.ArchitectureConflict, match=r"--resnet_width=64 .*resnet_width=no stem"):
        cli_train.file_architecture(cli_train._parse(["train", f"--init_weights={tmp_path / 'plain.keras'}",
                                                      "--resnet_width=64"]))
