"""Masked patch prediction: corruption statistics, the colour target, the masked loss, shared weights, the CLI."""

import json
import os

import keras
import numpy as np
import pytest

import keras_vit
from keras_vit import cli_pretrain, mpp


def tiny(**kwargs):
    return keras_vit.ViT(1, 16, 32, 2, 8, input_shape=(16, 16, 3), classes=10, **kwargs)


def classify_rows(original, corrupted, chosen, mask_token):
    """Labels every patch 'unchosen', 'mask', 'random' or 'unchanged'; also returns each random row's source."""
    batch, num_patches, width = original.shape
    flat = original.reshape(-1, width)
    kinds = np.empty((batch, num_patches), object)
    sources = {}
    for b in range(batch):
        for n in range(num_patches):
            row = corrupted[b, n]
            if not chosen[b, n]:
                assert np.array_equal(row, original[b, n]), "an unchosen patch changed"
                kinds[b, n] = "unchosen"
            elif np.array_equal(row, mask_token):
                kinds[b, n] = "mask"
            elif np.array_equal(row, original[b, n]):
                kinds[b, n] = "unchanged"
            else:
                matches = np.flatnonzero((flat == row).all(axis=1))
                assert len(matches) == 1 and matches[0] != b * num_patches + n, (b, n)
                kinds[b, n] = "random"
                sources[(b, n)] = divmod(int(matches[0]), num_patches)
    return kinds, sources


def test_corruption_statistics_over_many_draws():
    layer = mpp.PatchCorruption(seed=3)
    rng = np.random.default_rng(0)
    counts = {"mask": 0, "random": 0, "unchanged": 0}
    other_image = same_image = 0
    for _ in range(12):
        # Distinct random embeddings, so every corrupted row can be traced back to where it came from.
        x = rng.normal(size=(32, 49, 8)).astype("float32")
        tokens, chosen = layer(x, training=True)
        tokens, chosen = np.asarray(tokens), np.asarray(chosen)
        # round(0.5 * 49) = 24 chosen in every image (round half to even).
        assert chosen.sum(axis=1).tolist() == [24] * 32
        kinds, sources = classify_rows(x, tokens, chosen, layer.mask_token.numpy())
        for kind in counts:
            counts[kind] += int((kinds == kind).sum())
        for (b, _), (source_image, _) in sources.items():
            other_image += source_image != b
            same_image += source_image == b
    total = sum(counts.values())
    assert total == 12 * 32 * 24
    assert counts["mask"] / total == pytest.approx(0.8, abs=0.015), counts
    assert counts["random"] / total == pytest.approx(0.1, abs=0.012), counts
    assert counts["unchanged"] / total == pytest.approx(0.1, abs=0.012), counts
    # The random patch is drawn from the whole batch: 31 of 32 images are other images.
    assert other_image / (other_image + same_image) > 0.9


def test_corruption_is_seeded_and_training_only():
    x = np.random.default_rng(1).normal(size=(4, 16, 8)).astype("float32")
    first, second = mpp.PatchCorruption(seed=7), mpp.PatchCorruption(seed=7)
    second.build(x.shape)
    second.mask_token.assign(np.zeros(8, "float32"))
    first.build(x.shape)
    first.mask_token.assign(np.zeros(8, "float32"))
    a, b = first(x, training=True), second(x, training=True)
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    np.testing.assert_array_equal(np.asarray(a[1]), np.asarray(b[1]))
    assert not np.array_equal(np.asarray(first(x, training=True)[1]), np.asarray(a[1]))
    tokens, chosen = first(x, training=False)
    np.testing.assert_array_equal(np.asarray(tokens), x)
    assert not np.asarray(chosen).any() and np.asarray(chosen).shape == (4, 16)
    tokens, chosen = first(x)  # training defaults to False
    np.testing.assert_array_equal(np.asarray(tokens), x)


def test_corruption_config_round_trip_and_validation():
    layer = mpp.PatchCorruption(mask_ratio=0.25, mask_fraction=0.6, random_fraction=0.2, seed=5, name="c")
    clone = keras.layers.deserialize(keras.layers.serialize(layer))
    assert isinstance(clone, mpp.PatchCorruption)
    assert clone.get_config() == layer.get_config()
    assert (clone.mask_ratio, clone.mask_fraction, clone.random_fraction, clone.seed) == (0.25, 0.6, 0.2, 5)
    _, chosen = clone(np.ones((2, 16, 4), "float32"), training=True)
    assert np.asarray(chosen).sum(axis=1).tolist() == [4, 4]
    with pytest.raises(ValueError, match="mask_ratio=1.5"):
        mpp.PatchCorruption(mask_ratio=1.5)
    with pytest.raises(ValueError, match="mask_fraction=0.9, random_fraction=0.2"):
        mpp.PatchCorruption(mask_fraction=0.9, random_fraction=0.2)


def _image_of_patches(colours, patch=4):
    """A 1 x (patch) x (patch * len(colours)) image whose patches have the given (r, g, b) pixels."""
    return np.concatenate([np.full((1, patch, patch, 3), c, "float32") for c in colours], axis=2)


def test_colour_target_on_hand_made_patches():
    colours = [(0, 0, 0), (255, 255, 255), (255, 128, 0), (31, 32, 64), (100, 100, 100)]
    # 31/255*8 = 0.97 -> 0; 32/255*8 = 1.004 -> 1; 64/255*8 = 2.008 -> 2; 100/255*8 = 3.14 -> 3.
    expected = [0, 511, 7 * 64 + 4 * 8 + 0, 0 * 64 + 1 * 8 + 2, 3 * 73]
    image = _image_of_patches(colours)
    assert np.asarray(mpp.mean_colour_target(image, 4)).tolist() == [expected]
    # The mean is over the patch: half the pixels at 255, half at 0 -> 0.5 -> level 4 in every channel.
    half = np.zeros((1, 4, 4, 3), "float32")
    half[:, :2] = 255
    assert np.asarray(mpp.mean_colour_target(half, 4)).tolist() == [[4 * 73]]
    # Pixels in [-1, 1] (a ViT without the rescaling layer) give the same classes.
    scaled = image / 127.5 - 1.0
    assert np.asarray(mpp.mean_colour_target(scaled, 4, value_range=(-1, 1))).tolist() == [expected]
    # Grey images: only the 8 classes r = g = b occur, colour class 73 * grey class.
    levels = np.arange(0, 256, 8, dtype="float32")
    grey = _image_of_patches([(v, v, v) for v in levels])
    colour, grey_classes = np.asarray(mpp.mean_colour_target(grey, 4)), np.asarray(mpp.mean_colour_target(grey, 4, "grey"))
    assert sorted(set(colour.ravel())) == [73 * g for g in range(8)]
    np.testing.assert_array_equal(colour, 73 * grey_classes)
    assert grey_classes.ravel().tolist() == (levels / 255 * 8).astype(int).clip(0, 7).tolist()
    assert mpp.num_target_classes("colour") == 512 and mpp.num_target_classes("grey") == 8
    with pytest.raises(ValueError, match="target='rgb'"):
        mpp.mean_colour_target(image, 4, "rgb")
    with pytest.raises(ValueError, match="multiples of the patch size 3"):
        mpp.mean_colour_target(image, 3)


def test_loss_counts_only_the_chosen_patches():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 6, 8)).astype("float32")
    targets = rng.integers(0, 8, (2, 6))
    chosen = rng.random((2, 6)) < 0.5
    chosen[0, 0], chosen[1, 1] = True, False
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_patch = -np.take_along_axis(log_p, targets[..., None], -1)[..., 0]
    loss = float(mpp.masked_patch_loss(targets, logits, chosen))
    assert loss == pytest.approx(per_patch[chosen].mean(), rel=1e-5)
    # Whatever happens at the unchosen patches does not matter.
    other_logits, other_targets = logits.copy(), targets.copy()
    other_logits[~chosen] = rng.normal(size=(int((~chosen).sum()), 8)) * 10
    other_targets[~chosen] = (targets[~chosen] + 1) % 8
    assert float(mpp.masked_patch_loss(other_targets, other_logits, chosen)) == pytest.approx(loss, rel=1e-6)
    assert float(mpp.masked_patch_loss(targets, logits, np.zeros((2, 6), bool))) == 0.0


def test_mpp_model_shares_weights_with_the_vit():
    vit = tiny()
    model = mpp.mpp_model(vit, seed=0)
    vit_ids = {id(v) for v in vit.weights}
    shared = [v for v in model.weights if id(v) in vit_ids]
    assert len(shared) == len(vit.weights) - 2  # all but the classification head
    assert {v.path for v in model.weights if id(v) not in vit_ids} == {
        "vit_mpp/patch_corruption/mask_token", "vit_mpp/mpp_head/kernel", "vit_mpp/mpp_head/bias"}
    images = np.random.default_rng(3).uniform(0, 255, (8, 16, 16, 3)).astype("float32")
    model.get_layer("mpp_head").kernel.assign(np.random.default_rng(4).normal(size=(16, 512)).astype("float32"))
    before = np.asarray(model(images)["logits"])
    assert before.shape == (8, 4, 512)
    # A change in the ViT is seen by the MPP model ...
    kernel = vit.get_layer("embedding").projection.kernel
    kernel.assign(kernel.numpy() * 2.0)
    assert not np.allclose(np.asarray(model(images)["logits"]), before)
    # ... and training the MPP model trains the ViT, but not its classification head.
    snapshot = {v.path: v.numpy().copy() for v in vit.weights}
    model.compile(optimizer=keras_vit.training.create_optimizer("adam", 1e-2, total_steps=4, weight_decay=0.0),
                  jit_compile=False)
    history = model.fit(images, batch_size=4, epochs=2, verbose=0)
    assert set(history.history) == {"loss", "masked_accuracy"} and np.isfinite(history.history["loss"]).all()
    moved = {v.path for v in vit.weights if not np.array_equal(v.numpy(), snapshot[v.path])}
    assert "embedding/projection/kernel" in moved and "encoder_norm/gamma" in moved and "class_token/cls" in moved
    assert not moved & {"head/kernel", "head/bias"}


def test_mpp_model_without_class_token_and_with_a_grey_head():
    vit = keras_vit.ViT(1, 16, 32, 2, 8, input_shape=(16, 16, 3), include_top=False, classifier="gap",
                        include_preprocessing=False)
    model = mpp.mpp_model(vit, target="grey")
    assert (model.num_prefix_tokens, model.value_range) == (0, (-1.0, 1.0))
    assert tuple(model(np.zeros((2, 16, 16, 3)))["logits"].shape) == (2, 4, 8)
    with pytest.raises(ValueError, match="layers 'embedding' ... 'encoder_norm'"):
        mpp.mpp_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]))


def test_pretrain_command_end_to_end_on_real_fashion_mnist(tmp_path, capsys):
    out = tmp_path / "mpp"
    argv = ["keras-vit pretrain", "--num_layers=1", "--hidden_size=16", "--mlp_dim=32", "--num_heads=2",
            "--patch_size=7", "--max_train_examples=256", "--max_eval_examples=128", "--batch_size=64",
            "--pretrain_epochs=1", "--epochs=1", "--target=grey", "--nojit_compile", "--verbose=0",
            f"--output_dir={out}"]
    assert cli_pretrain.main(argv) == 0
    summary = json.loads((out / "mpp_summary.json").read_text())
    assert summary["command"].startswith("keras-vit pretrain --num_layers=1")
    assert summary["pretrain"]["classes"] == 8 and summary["pretrain"]["steps"] == 4
    for run in ("finetune", "scratch"):
        assert 0.0 <= summary[run]["accuracy"] <= 1.0 and summary[run]["train_seconds"] > 0
        assert os.path.exists(out / run / "model.keras")
    assert summary["train_examples"] == 256 and summary["eval_examples"] == 128
    assert summary["pretrain"]["weights"] == str(out / "pretrain" / "vit_mpp.weights.h5")
    assert os.path.exists(summary["pretrain"]["weights"])
    assert "fine-tuned" in capsys.readouterr().out


def test_pretrain_flags_quick_and_strategy(capsys):
    values = cli_pretrain._parse(["keras-vit pretrain", "--quick", "--epochs=2"])
    assert (values.pretrain_epochs, values.epochs, values.max_train_examples) == (1, 2, 6000)
    assert cli_pretrain._parse(["keras-vit pretrain"]).pretrain_epochs == 5
    values = cli_pretrain._parse(["keras-vit pretrain", "--strategy=mirrored"])
    with pytest.raises(ValueError, match="strategy='mirrored'"):
        cli_pretrain.pretrain(values)
