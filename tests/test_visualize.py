"""Attention rollout and the paper's Figure 6/7 analyses, on tiny models."""

import numpy as np
import pytest

import keras_vit
from keras_vit import plots, visualize

GRID = 4  # 32x32 images, 8x8 patches


def tiny(**kwargs):
    return keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3), **kwargs)


def images(batch=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, 32, 32, 3)).astype("float32")


def attend_to_patch(model, target):
    """Sets the weights by hand so that every query of every head attends to patch `target`.

    Only that patch's position embedding is non-zero; after LayerNorm its
    first feature is large, the key projection copies it into every head,
    and a constant query turns it into a large logit for that key alone.
    """
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    prefix = model.get_layer("posembed_input").num_prefix_tokens
    position = np.zeros(model.get_layer("posembed_input").pos_embedding.shape, "float32")
    position[0, prefix + target, 0] = 10.0
    model.get_layer("posembed_input").pos_embedding.assign(position)
    for i in range(2):
        block = model.get_layer(f"encoderblock_{i}")
        for norm in (block.attention_norm, block.mlp_norm):
            norm.gamma.assign(np.ones(norm.gamma.shape, "float32"))
        key = np.zeros(block.attention.key_dense.kernel.shape, "float32")
        key[0, :, 0] = 1.0
        block.attention.key_dense.kernel.assign(key)
        query_bias = np.zeros(block.attention.query_dense.bias.shape, "float32")
        query_bias[:, 0] = 20.0
        block.attention.query_dense.bias.assign(query_bias)
    model.get_layer("encoder_norm").gamma.assign(np.ones((32,), "float32"))


def test_rollout_rows_are_distributions():
    model = tiny()
    rollout = visualize.attention_rollout(keras_vit.forward_intermediates(model, images())["attention"])
    assert rollout.shape == (2, 17, 17)
    assert np.all(rollout >= 0)
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, atol=1e-9)


def test_rollout_matches_hand_computation():
    rng = np.random.default_rng(0)
    layers = [rng.dirichlet(np.ones(3), size=(1, 2, 3)) for _ in range(2)]
    expected = None
    for a in layers:
        joint = a[0].mean(0) + np.eye(3)
        joint /= joint.sum(-1, keepdims=True)
        expected = joint if expected is None else joint @ expected
    np.testing.assert_allclose(visualize.attention_rollout(layers)[0], expected)
    with pytest.raises(ValueError, match="at least one layer"):
        visualize.attention_rollout([])


@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_attention_map_peaks_at_the_attended_patch(classifier):
    model = tiny(classifier=classifier)
    target = 6  # row 1, column 2 of the 4x4 grid
    attend_to_patch(model, target)
    grid_map = visualize.attention_map(model, images(), upsample=False)
    assert grid_map.shape == (2, GRID, GRID)
    assert all(np.unravel_index(np.argmax(m), m.shape) == (1, 2) for m in grid_map)
    full = visualize.attention_map(model, images())
    assert full.shape == (2, 32, 32) and full.min() >= 0 and full.max() <= 1
    peak = np.unravel_index(np.argmax(full[0]), full[0].shape)
    assert 8 <= peak[0] < 16 and 16 <= peak[1] < 24
    heads = visualize.last_layer_head_maps(model, images(), upsample=False)
    assert heads.shape == (2, 2, GRID, GRID)
    assert np.all(heads.reshape(2, 2, -1).argmax(-1) == target)


def test_position_similarity_is_symmetric_with_unit_diagonal():
    for kind in ("learned", "learned_2d", "sincos_2d"):
        similarity = visualize.position_embedding_similarity(tiny(position_embedding=kind))
        assert similarity.shape == (16, 16)
        np.testing.assert_allclose(similarity, similarity.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(similarity), 1.0, atol=1e-9)
    # Fixed sin-cos embeddings are most similar to their grid neighbours.
    sincos = visualize.position_embedding_similarity(tiny(position_embedding="sincos_2d"))
    assert sincos[5, 6] > sincos[5, 15]
    with pytest.raises(ValueError, match="no position embeddings"):
        visualize.position_embedding_similarity(tiny(position_embedding="none"))


def test_embedding_filter_components_are_orthonormal_and_sorted():
    components, explained = visualize.embedding_filter_components(tiny(), 28)
    assert components.shape == (28, 8, 8, 3)
    flat = components.reshape(28, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=1e-9)
    assert np.all(np.diff(explained) <= 1e-12) and 0 < explained.sum() <= 1


def test_attention_distance():
    distances = visualize.patch_distances((2, 3), (8, 8))
    assert distances[0, 5] == pytest.approx(np.hypot(8, 16))
    # A model whose attention is the identity (each patch attends only to itself) has distance 0.
    model = tiny(classifier="gap")
    for weight in model.weights:
        weight.assign(np.zeros(weight.shape, "float32"))
    # A one-hot position per patch, in the features of both heads.
    position = np.concatenate([np.eye(16), np.eye(16)], axis=1).astype("float32")[None] * 10.0
    model.get_layer("posembed_input").pos_embedding.assign(position)
    for i in range(2):
        block = model.get_layer(f"encoderblock_{i}")
        block.attention_norm.gamma.assign(np.ones((32,), "float32"))
        identity = np.eye(32, dtype="float32").reshape(32, 2, 16) * 10.0
        block.attention.query_dense.kernel.assign(identity)
        block.attention.key_dense.kernel.assign(identity)
    result = visualize.mean_attention_distance(model, images())
    assert result.shape == (2, 2)
    np.testing.assert_allclose(result[0], 0.0, atol=1e-3)
    # Uniform attention over a 4x4 grid of 8-pixel patches has the grid's mean pairwise distance.
    uniform = tiny()
    for i in range(2):
        block = uniform.get_layer(f"encoderblock_{i}")
        block.attention.query_dense.kernel.assign(np.zeros(block.attention.query_dense.kernel.shape, "float32"))
    expected = visualize.patch_distances((4, 4), (8, 8)).mean()
    np.testing.assert_allclose(visualize.mean_attention_distance(uniform, images()), expected, rtol=1e-5)


def test_figures_are_written_as_valid_pngs(tmp_path):
    from PIL import Image

    model = tiny()
    x = images(1)
    paths = [
        plots.attention_overlay(x[0], visualize.attention_map(model, x)[0], tmp_path / "overlay.png"),
        plots.head_maps(x[0], visualize.last_layer_head_maps(model, x)[0], tmp_path / "heads.png"),
        plots.position_similarity(visualize.position_embedding_similarity(model), (4, 4), tmp_path / "pos.png"),
        plots.embedding_filters(*visualize.embedding_filter_components(model), tmp_path / "filters.png"),
        plots.attention_distance(visualize.mean_attention_distance(model, x), tmp_path / "distance.png", (32, 32)),
    ]
    expected_sizes = {"overlay.png": (600, 320), "distance.png": (450, 350)}
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] >= 100
            if path.name in expected_sizes:
                assert image.size == expected_sizes[path.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths), "no temp files left"


def test_hybrid_distances_are_in_pixels_and_it_has_no_pixel_filters():
    """A hybrid's tokens sit one stem stride apart (4 pixels here), not one patch (1) apart."""
    model = keras_vit.ViT(2, 32, 64, 2, 1, input_shape=(28, 28, 3), resnet=dict(num_layers=(1,), width=32))
    assert model.get_layer("posembed_input").grid_size == (7, 7)
    for i in range(2):
        block = model.get_layer(f"encoderblock_{i}")
        block.attention.query_dense.kernel.assign(np.zeros(block.attention.query_dense.kernel.shape, "float32"))
    x = np.random.default_rng(0).uniform(0, 255, (2, 28, 28, 3)).astype("float32")
    expected = visualize.patch_distances((7, 7), (4, 4)).mean()
    np.testing.assert_allclose(visualize.mean_attention_distance(model, x), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="hybrid ViT's embedding reads the ResNet stem's features"):
        visualize.embedding_filter_components(model)
