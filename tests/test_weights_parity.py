"""Parity with timm and Hugging Face on real photographs, and the golden ImageNet check.

The reference models (random init, PyTorch) run in a subprocess: importing
torchvision (which timm needs) into a process that already loaded keras_vit
crashes. The subprocess writes the state dict as .safetensors and its logits;
this process loads the file through keras_vit and compares.
Tolerance: max absolute logit difference <= 1e-4.
"""

import json
import os
import subprocess
import sys
import urllib.request

import keras
import numpy as np
import pytest
from PIL import Image

import keras_vit
from keras_vit import checkpoints, download

TOLERANCE = 1e-4

TORCH_SCRIPT = r"""
import json, sys
import numpy as np, torch
from safetensors.torch import save_file

task = json.loads(sys.argv[1])
out = task["out"]
torch.set_num_threads(2)


def randomize(model):
    # Every tensor random, norms included (their init 1/0 would hide a swapped mapping);
    # matrices scaled by fan-in so the logits stay O(1).
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if p.ndim == 1 and "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.1 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            elif "pos_embed" in name or "position_embeddings" in name or "cls" in name:
                p.copy_(0.5 * noise)
            else:
                p.copy_(noise / np.sqrt(np.prod(p.shape[1:])))


def pixels(size):
    x = np.load(f"{out}/images_{size}.npy") / 127.5 - 1.0
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype("float32"))


results = {}
if task["kind"] == "timm":
    import timm

    model = timm.create_model(task["name"], pretrained=False, num_classes=task["classes"]).eval()
    randomize(model)
    path = f"{out}/timm.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    for size in task["sizes"]:
        m = model if size == task["size"] else timm.create_model(
            task["name"], pretrained=True, img_size=size, num_classes=task["classes"],
            pretrained_cfg_overlay=dict(file=path, num_classes=task["classes"])).eval()
        with torch.no_grad():
            results[str(size)] = m(pixels(size)).numpy()
elif task["kind"] == "hf":
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(**task["config"])
    model = ViTForImageClassification(config).eval()
    randomize(model)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{out}/hf.safetensors")
    with torch.no_grad():
        results[str(config.image_size)] = model(pixel_values=pixels(config.image_size)).logits.numpy()
elif task["kind"] == "resample":
    from timm.layers import resample_abs_pos_embed

    posemb = torch.from_numpy(np.load(f"{out}/posemb.npy"))
    for new in task["grids"]:
        results["x".join(map(str, new))] = resample_abs_pos_embed(posemb, list(new), num_prefix_tokens=1).numpy()
np.savez(f"{out}/reference.npz", **results)
"""


def run_torch(tmp_path, **task):
    task["out"] = str(tmp_path)
    env = dict(os.environ, USE_TF="0", USE_TORCH="1", TRANSFORMERS_OFFLINE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-c", TORCH_SCRIPT, json.dumps(task)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(tmp_path / "reference.npz"))


def photos(size):
    """scikit-image's sample photographs, resized (bilinear) to size x size, pixels in [0, 255]."""
    from skimage import data

    return np.stack([
        np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR), np.float32)
        for image in (data.chelsea(), data.astronaut(), data.coffee())
    ])


def save_photos(tmp_path, sizes):
    for size in sizes:
        np.save(tmp_path / f"images_{size}.npy", photos(size))


def logits(model, size):
    return keras.ops.convert_to_numpy(model.predict(photos(size), verbose=0))


def test_bicubic_resampling_matches_timm(tmp_path):
    posemb = np.random.default_rng(0).standard_normal((1, 1 + 14 * 14, 8)).astype("float32")
    np.save(tmp_path / "posemb.npy", posemb)
    grids = [(24, 24), (7, 7), (10, 20)]  # up, down (antialiased), non-square
    reference = run_torch(tmp_path, kind="resample", grids=grids)
    for grid in grids:
        ours = checkpoints.resample_position_embedding(posemb, grid, method="bicubic")
        np.testing.assert_allclose(ours, reference["x".join(map(str, grid))], atol=1e-5, err_msg=str(grid))


def _timm_parity(tmp_path, timm_name, constructor):
    save_photos(tmp_path, (224, 384))
    reference = run_torch(tmp_path, kind="timm", name=timm_name, classes=1000, size=224, sizes=[224, 384])
    path = str(tmp_path / "timm.safetensors")
    model = constructor(weights=path, classifier_activation=None)
    assert model.get_layer("encoderblock_0").gelu_approximate is False
    ours = logits(model, 224)
    assert np.abs(reference["224"]).max() > 0.5  # a comparison of non-trivial logits
    np.testing.assert_allclose(ours, reference["224"], atol=TOLERANCE, rtol=0)
    model = constructor(weights=None, input_shape=(384, 384, 3), classifier_activation=None)
    report = keras_vit.load_weights(model, path, resample="bicubic")
    assert report["resampled"][2] == "bicubic"
    np.testing.assert_allclose(logits(model, 384), reference["384"], atol=TOLERANCE, rtol=0)
    return float(np.abs(ours - reference["224"]).max())


def test_timm_tiny_parity_at_224_and_384(tmp_path):
    _timm_parity(tmp_path, "vit_tiny_patch16_224", keras_vit.ViT_Ti16)


@pytest.mark.slow
def test_timm_base_parity_at_224_and_384(tmp_path):
    _timm_parity(tmp_path, "vit_base_patch16_224", keras_vit.ViT_B16)


def test_hugging_face_parity(tmp_path):
    save_photos(tmp_path, (224,))
    config = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                  image_size=224, patch_size=16, num_labels=10)
    reference = run_torch(tmp_path, kind="hf", config=config)
    model = keras_vit.ViT(2, 64, 128, 4, 16, input_shape=(224, 224, 3), classes=10,
                          weights=str(tmp_path / "hf.safetensors"), classifier_activation=None)
    assert model.get_layer("encoder_norm").epsilon == 1e-12  # HF's LayerNorm epsilon, carried over
    assert np.abs(reference["224"]).max() > 0.5
    ours = logits(model, 224)
    np.testing.assert_allclose(ours, reference["224"], atol=TOLERANCE, rtol=0)

    # The same weights under the classic names of the Hub's ViT files (transformers < 5).
    from safetensors.numpy import load_file, save_file

    classic = {"layers.": "encoder.layer.", "attention.q_proj": "attention.attention.query",
               "attention.k_proj": "attention.attention.key", "attention.v_proj": "attention.attention.value",
               "attention.o_proj": "attention.output.dense", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    renamed = {}
    for key, value in load_file(tmp_path / "hf.safetensors").items():
        for new_name, old_name in classic.items():
            key = key.replace(new_name, old_name)
        renamed[key] = value
    assert "vit.encoder.layer.1.attention.attention.value.weight" in renamed
    save_file(renamed, tmp_path / "hf_classic.safetensors")
    model = keras_vit.ViT(2, 64, 128, 4, 16, input_shape=(224, 224, 3), classes=10, classifier_activation=None)
    keras_vit.load_weights(model, str(tmp_path / "hf_classic.safetensors"))
    assert model.get_layer("encoderblock_1").layer_norm_epsilon == 1e-12
    np.testing.assert_allclose(logits(model, 224), ours, atol=1e-6, rtol=0)


@pytest.mark.slow
def test_golden_imagenet_b16_classifies_chelsea_as_a_cat():
    entry = checkpoints.get_entry("imagenet", "B/16")
    if not os.path.exists(download.cached_path(entry)):
        try:
            urllib.request.urlopen(urllib.request.Request(entry["url"], method="HEAD"), timeout=10).close()
        except OSError as error:
            pytest.skip(f"golden check skipped: {entry['url']} is not reachable ({error})")
    model = keras_vit.ViT_B16(weights="imagenet")
    top = keras_vit.decode_predictions(model.predict(photos(224)[:1], verbose=0), top=3)[0]
    assert {name for _, name, _ in top} & {"tabby", "tiger_cat", "Egyptian_cat"}, top
