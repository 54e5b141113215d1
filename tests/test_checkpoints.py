"""Checkpoint loading: official .npz layouts, keras files at other sizes, resampling, errors.

The official-layout files are written here with random values under exactly
the official keys and shapes, and checked against an independent NumPy
forward pass of the official ViT.
"""

import math

import keras
import numpy as np
import pytest
import scipy.ndimage
from scipy.special import erf

import keras_vit
from keras_vit import checkpoints

TINY = dict(num_layers=2, hidden_size=32, mlp_dim=64, num_heads=2, patch_size=8)


def tiny(**kwargs):
    kwargs.setdefault("input_shape", (32, 32, 3))
    return keras_vit.ViT(**TINY, **kwargs)


def official_params(rng, grid=4, layers=2, width=32, mlp=64, heads=2, patch=8, classes=10, rep=None, cls=True):
    """Random arrays under exactly the official keys and shapes."""
    n = lambda *shape, s=0.2: (rng.standard_normal(shape) * s).astype("float32")  # noqa: E731
    p = {"embedding/kernel": n(patch, patch, 3, width, s=0.05), "embedding/bias": n(width)}
    if cls:
        p["cls"] = n(1, 1, width)
    p["Transformer/posembed_input/pos_embedding"] = n(1, int(cls) + grid * grid, width)
    for i in range(layers):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            p[b + ln + "/scale"], p[b + ln + "/bias"] = 1 + n(width), n(width)
        a = b + "MultiHeadDotProductAttention_1/"
        for name in ("query", "key", "value"):
            p[a + name + "/kernel"], p[a + name + "/bias"] = n(width, heads, width // heads), n(heads, width // heads)
        p[a + "out/kernel"], p[a + "out/bias"] = n(heads, width // heads, width), n(width)
        p[b + "MlpBlock_3/Dense_0/kernel"], p[b + "MlpBlock_3/Dense_0/bias"] = n(width, mlp), n(mlp)
        p[b + "MlpBlock_3/Dense_1/kernel"], p[b + "MlpBlock_3/Dense_1/bias"] = n(mlp, width), n(width)
    p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"] = 1 + n(width), n(width)
    if rep:
        p["pre_logits/kernel"], p["pre_logits/bias"] = n(width, rep), n(rep)
    p["head/kernel"], p["head/bias"] = n(rep or width, classes), n(classes)
    return p


def numpy_vit(p, images, patch=8, eps=1e-6, approximate=True):
    """The official ViT forward pass in NumPy, straight from the checkpoint dict (logits)."""
    x = images.astype(np.float64) / 127.5 - 1.0
    b, h, w, c = x.shape
    gh, gw = h // patch, w // patch
    x = x.reshape(b, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, gh * gw, -1)
    x = x @ p["embedding/kernel"].reshape(-1, p["embedding/kernel"].shape[-1]) + p["embedding/bias"]
    if "cls" in p:
        x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, x.shape[-1])), x], axis=1)
    x = x + p["Transformer/posembed_input/pos_embedding"]

    def norm(t, key):
        mu, var = t.mean(-1, keepdims=True), t.var(-1, keepdims=True)
        return (t - mu) / np.sqrt(var + eps) * p[key + "/scale"] + p[key + "/bias"]

    def gelu(t):
        if approximate:
            return 0.5 * t * (1 + np.tanh(math.sqrt(2 / math.pi) * (t + 0.044715 * t**3)))
        return 0.5 * t * (1 + erf(t / math.sqrt(2)))

    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in p:
        blk = f"Transformer/encoderblock_{i}/"
        a = blk + "MultiHeadDotProductAttention_1/"
        y = norm(x, blk + "LayerNorm_0")
        q, k, v = (np.einsum("btd,dhk->bhtk", y, p[a + n + "/kernel"]) + p[a + n + "/bias"][None, :, None]
                   for n in ("query", "key", "value"))
        logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1])
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("bhtk,hkd->btd", probs @ v, p[a + "out/kernel"]) + p[a + "out/bias"]
        y = norm(x, blk + "LayerNorm_2")
        y = gelu(y @ p[blk + "MlpBlock_3/Dense_0/kernel"] + p[blk + "MlpBlock_3/Dense_0/bias"])
        x = x + y @ p[blk + "MlpBlock_3/Dense_1/kernel"] + p[blk + "MlpBlock_3/Dense_1/bias"]
        i += 1
    x = norm(x, "Transformer/encoder_norm")
    x = x[:, 0] if "cls" in p else x.mean(1)
    if "pre_logits/kernel" in p:
        x = np.tanh(x @ p["pre_logits/kernel"] + p["pre_logits/bias"])
    return x @ p["head/kernel"] + p["head/bias"]


@pytest.fixture
def images():
    return np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")


def logits_of(model, images):
    return keras.ops.convert_to_numpy(model(images))


# --- resample_position_embedding --------------------------------------------------------------


def test_resample_official_is_scipy_zoom_and_keeps_the_class_row():
    posemb = np.random.default_rng(0).standard_normal((1, 1 + 14 * 14, 6)).astype("float32")
    out = checkpoints.resample_position_embedding(posemb, 24)
    grid = posemb[0, 1:].reshape(14, 14, 6)
    expected = scipy.ndimage.zoom(grid, (24 / 14, 24 / 14, 1), order=1).reshape(-1, 6)
    assert out.shape == (1, 1 + 24 * 24, 6) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, 1:], expected, atol=1e-6)
    np.testing.assert_array_equal(out[0, 0], posemb[0, 0])
    # Corner-aligned: the four corners are copied exactly.
    out_grid = out[0, 1:].reshape(24, 24, 6)
    for (i, j), (k, m) in zip([(0, 0), (0, -1), (-1, 0), (-1, -1)], [(0, 0), (0, -1), (-1, 0), (-1, -1)]):
        np.testing.assert_allclose(out_grid[i, j], grid[k, m], atol=1e-6)


def test_resample_non_square_no_prefix_and_identity():
    posemb = np.random.default_rng(0).standard_normal((16, 4)).astype("float32")
    out = checkpoints.resample_position_embedding(posemb, (2, 6), num_prefix_tokens=0)
    assert out.shape == (12, 4)
    # Constant grids stay constant under both methods (weights sum to one).
    const = np.ones((1, 1 + 9, 3), "float32")
    for method in ("official", "bicubic"):
        np.testing.assert_allclose(checkpoints.resample_position_embedding(const, (5, 7), method=method), 1, atol=1e-6)
    np.testing.assert_array_equal(checkpoints.resample_position_embedding(posemb[None], 4, 0)[0], posemb)
    with pytest.raises(ValueError, match="not square"):
        checkpoints.resample_position_embedding(np.zeros((1, 1 + 12, 3)), 4)
    with pytest.raises(ValueError, match="`method` must be one of"):
        checkpoints.resample_position_embedding(posemb, 4, method="nearest")


# --- keras_vit files at another size (the fine-tuning API) ------------------------------------


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_keras_files_load_at_another_size_and_classes(tmp_path, suffix, images):
    rng = np.random.default_rng(0)
    source = tiny(classes=10, representation_size=16)
    source.set_weights([rng.standard_normal(w.shape).astype("float32") * 0.1 for w in source.weights])
    path = str(tmp_path / f"src{suffix}")
    source.save(path) if suffix == ".keras" else source.save_weights(path)

    same = tiny(classes=10, representation_size=16)
    keras_vit.load_weights(same, path)
    np.testing.assert_allclose(logits_of(same, images), logits_of(source, images), atol=1e-6)

    bigger = keras_vit.ViT(**TINY, input_shape=(48, 40, 3), classes=3, representation_size=16)
    report = keras_vit.load_weights(bigger, path)
    assert report["skipped"] == ["head/bias", "head/kernel"]
    assert report["resampled"] == ((1, 17, 32), (1, 31, 32), "official")
    expected = checkpoints.resample_position_embedding(source.get_layer("posembed_input").pos_embedding.numpy(), (6, 5))
    np.testing.assert_allclose(bigger.get_layer("posembed_input").pos_embedding.numpy(), expected, atol=1e-6)
    np.testing.assert_array_equal(bigger.get_layer("encoderblock_1").mlp_dense_1.kernel.numpy(),
                                  source.get_layer("encoderblock_1").mlp_dense_1.kernel.numpy())
    assert not np.any(bigger.get_layer("head").kernel.numpy())  # kept its zero init


def test_keras_file_with_a_non_square_grid_loads_back(tmp_path, images):
    source = keras_vit.ViT(**TINY, input_shape=(32, 48, 3))
    source.get_layer("posembed_input").pos_embedding.assign(np.random.rand(1, 25, 32).astype("float32"))
    source.save(tmp_path / "wide.keras")
    target = tiny()
    keras_vit.load_weights(target, str(tmp_path / "wide.keras"))
    expected = checkpoints.resample_position_embedding(
        source.get_layer("posembed_input").pos_embedding.numpy(), (4, 4), old_grid=(4, 6))
    np.testing.assert_allclose(target.get_layer("posembed_input").pos_embedding.numpy(), expected, atol=1e-6)


# --- official .npz layouts ---------------------------------------------------------------------


def test_official_npz_matches_numpy_reference(tmp_path, images):
    params = official_params(np.random.default_rng(0), rep=16)
    np.savez(tmp_path / "official.npz", **params)
    model = tiny(classes=10, weights=str(tmp_path / "official.npz"), classifier_activation=None)
    assert model.get_layer("pre_logits").units == 16  # representation_size taken from the file
    assert model.get_layer("encoderblock_0").gelu_approximate is True
    np.testing.assert_allclose(logits_of(model, images), numpy_vit(params, images), atol=1e-4)


def test_prefixed_layouts_and_big_vision_names(tmp_path, images):
    params = official_params(np.random.default_rng(0))
    reference = numpy_vit(params, images)
    np.savez(tmp_path / "old.npz", **{"opt/target/" + k: v for k, v in params.items()},
             **{"opt/state/step": np.zeros(())})
    # big_vision: params/ prefix, newer Flax names, blocks stacked by scan,
    # position embeddings without the class-token row (added before the token).
    bv = {}
    for key, value in params.items():
        key = key.replace("MultiHeadDotProductAttention_1", "MultiHeadDotProductAttention_0")
        key = key.replace("LayerNorm_2", "LayerNorm_1").replace("MlpBlock_3", "MlpBlock_0")
        bv["params/" + key] = value
    bv["params/pos_embedding"] = bv.pop("params/Transformer/posembed_input/pos_embedding")[:, 1:]
    stacked = {}
    for key in [k for k in bv if "encoderblock_" in k]:
        rest = key.split("encoderblock_")[1].split("/", 1)[1]
        stacked.setdefault(rest, []).append(bv.pop(key))
    bv.update({"params/Transformer/encoderblock/" + k: np.stack(v) for k, v in stacked.items()})
    np.savez(tmp_path / "bv.npz", **bv)

    old = tiny(classes=10, classifier_activation=None)
    keras_vit.load_weights(old, str(tmp_path / "old.npz"))
    np.testing.assert_allclose(logits_of(old, images), reference, atol=1e-4)
    new = tiny(classes=10, classifier_activation=None, weights=str(tmp_path / "bv.npz"))
    no_cls_posemb = dict(params)
    no_cls_posemb["Transformer/posembed_input/pos_embedding"] = params["Transformer/posembed_input/pos_embedding"].copy()
    no_cls_posemb["Transformer/posembed_input/pos_embedding"][:, 0] = 0
    np.testing.assert_allclose(logits_of(new, images), numpy_vit(no_cls_posemb, images), atol=1e-4)


def test_npz_at_another_resolution_and_without_top(tmp_path):
    params = official_params(np.random.default_rng(0), rep=16)
    np.savez(tmp_path / "ckpt.npz", **params)
    model = tiny(input_shape=(64, 48, 3), include_top=False, pooling="token", weights=str(tmp_path / "ckpt.npz"))
    expected = checkpoints.resample_position_embedding(params["Transformer/posembed_input/pos_embedding"], (8, 6))
    np.testing.assert_allclose(model.get_layer("posembed_input").pos_embedding.numpy(), expected, atol=1e-6)
    # Fine-tuning with another number of classes: the head is skipped.
    head10 = tiny(classes=3, weights=str(tmp_path / "ckpt.npz"))
    assert not np.any(head10.get_layer("head").kernel.numpy())


def test_load_weights_sets_the_checkpoint_numerics(tmp_path, images):
    params = official_params(np.random.default_rng(0))
    np.savez(tmp_path / "ckpt.npz", **params)
    model = tiny(classes=10, classifier_activation=None)  # exact GELU by default
    logits_of(model, images)
    report = keras_vit.load_weights(model, str(tmp_path / "ckpt.npz"))
    assert report["numerics"]
    np.testing.assert_allclose(logits_of(model, images), numpy_vit(params, images), atol=1e-4)
    np.testing.assert_allclose(model.predict(images, verbose=0), numpy_vit(params, images), atol=1e-4)


# --- bad files ---------------------------------------------------------------------------------


def test_bad_files_get_clear_errors(tmp_path):
    params = official_params(np.random.default_rng(0))
    np.savez(tmp_path / "good.npz", **params)
    data = open(tmp_path / "good.npz", "rb").read()
    open(tmp_path / "truncated.npz", "wb").write(data[: len(data) // 2])
    open(tmp_path / "text.npz", "w").write("not a checkpoint")
    np.savez(tmp_path / "pickle.npz", **params, meta=np.array([{"a": 1}], dtype=object))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    deeper = official_params(np.random.default_rng(0), layers=3)
    np.savez(tmp_path / "deeper.npz", **deeper)
    wider = official_params(np.random.default_rng(0), width=48, mlp=96, heads=3)
    np.savez(tmp_path / "wider.npz", **wider)
    model = tiny(classes=10)
    before = [w.numpy().copy() for w in model.weights]
    cases = {
        "truncated.npz": "Not a readable .npz",
        "text.npz": "Not a readable .npz",
        "pickle.npz": "pickled objects",
        "other.npz": "Not a ViT checkpoint",
        "deeper.npz": "'Transformer/encoderblock_2/LayerNorm_0/scale'",
        "wider.npz": "tensor 'embedding/kernel' expected shape (8, 8, 3, 32), found (8, 8, 3, 48)",
        "missing.npz": "does not exist",
        "model.pt": "Unknown weights file type",
    }
    for name, message in cases.items():
        with pytest.raises((ValueError, FileNotFoundError)) as error:
            keras_vit.load_weights(model, str(tmp_path / name))
        assert message in str(error.value), (name, str(error.value))
    for w, b in zip(model.weights, before):  # nothing was half-assigned
        np.testing.assert_array_equal(w.numpy(), b)
    with pytest.raises(ValueError, match="no tensor 'pre_logits/kernel' \\(expected shape \\(32, 8\\)\\)"):
        keras_vit.load_weights(tiny(classes=10, representation_size=8), str(tmp_path / "good.npz"))
    with pytest.raises(ValueError, match="The weights file does not exist"):
        tiny(weights=str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="multiples of the patch size"):  # shape errors come first
        tiny(weights=str(tmp_path / "missing.npz"), input_shape=(33, 32, 3))


# --- catalogue ---------------------------------------------------------------------------------


def test_catalogue_entries_are_consistent():
    entries = checkpoints.list_weights()
    assert len(entries) >= 30
    for entry in entries:
        assert entry["url"].startswith("https://storage.googleapis.com/vit_models/") and entry["url"].endswith(".npz")
        assert "+" not in entry["url"]
        assert entry["variant"] in {**keras_vit.VARIANTS, **keras_vit.HYBRID_VARIANTS}
    # Sizes are the float32 parameter bytes of the architecture each file holds.
    assert checkpoints.WEIGHTS["vit_ti16_augreg_in21k_ft_in1k_224"]["size"] == 4 * 5_717_416
    assert checkpoints.WEIGHTS["vit_b16_augreg_in21k_ft_in1k_224"]["size"] == 4 * 86_567_656
    entry = checkpoints.WEIGHTS["vit_b16_in21k"]
    assert entry["representation_size"] == 768 and entry["classes"] == 21843
    assert "imagenet21k%2Bimagenet2012" in checkpoints.WEIGHTS["vit_l32_in21k_ft_in1k_384"]["url"]
    assert checkpoints.get_entry("imagenet", "B/16")["image_size"] == 224
    assert checkpoints.get_entry("imagenet", "B/16", 384)["image_size"] == 384
    assert checkpoints.get_entry("imagenet", "L/32")["image_size"] == 384
    with pytest.raises(ValueError, match="No ImageNet-1k fine-tune of ViT-H/14"):
        checkpoints.get_entry("imagenet", "H/14")
    with pytest.raises(ValueError, match="are for ViT-B/16, and this model is ViT-S/16"):
        checkpoints.get_entry("vit_b16_in21k", "S/16")
    with pytest.raises(ValueError, match='`weights="imagenet"` with `include_top=True`, `classes` should be 1000'):
        keras_vit.ViT_B16(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="`classes` should be 21843. Received: classes=1000"):
        keras_vit.ViT_B16(weights="imagenet21k")
    with pytest.raises(ValueError, match="match none of them"):
        tiny(weights="imagenet")


def test_weights_file_without_a_head_loads_pre_logits(tmp_path):
    source = tiny(include_top=False, pooling="token", representation_size=16)
    source.get_layer("pre_logits").bias.assign(np.arange(16, dtype="float32"))
    source.save_weights(tmp_path / "features.weights.h5")
    target = tiny(include_top=False, pooling="avg", representation_size=16, input_shape=(48, 48, 3))
    keras_vit.load_weights(target, str(tmp_path / "features.weights.h5"))
    np.testing.assert_array_equal(target.get_layer("pre_logits").bias.numpy(), np.arange(16))
