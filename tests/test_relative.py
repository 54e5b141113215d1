"""Relative position embeddings, and every position-embedding kind of the ablation in a model."""

import keras
import numpy as np
import pytest
from scipy.special import softmax

import keras_vit
from keras_vit import layers as vit_layers
from keras_vit.relative import RelativePositionAttention, relative_offsets


def to_numpy(x):
    return keras.ops.convert_to_numpy(x)


def numpy_relative_attention(layer, x):
    """Independent float64 forward: content logits plus q . r[i - j] logits, softmax, output."""
    w = {v.path.split("/")[-2] + "/" + v.name: to_numpy(v).astype("float64") for v in layer.weights}
    x = x.astype("float64")
    q = np.einsum("btd,dnh->btnh", x, w["query/kernel"]) + w["query/bias"]
    k = np.einsum("btd,dnh->btnh", x, w["key/kernel"]) + w["key/bias"]
    v = np.einsum("btd,dnh->btnh", x, w["value/kernel"]) + w["value/bias"]
    table = to_numpy(layer.relative_embedding).astype("float64")
    tokens, head_dim = x.shape[1], q.shape[-1]
    logits = np.einsum("binh,bjnh->bnij", q, k)
    for i in range(tokens):
        for j in range(tokens):
            logits[:, :, i, j] += np.einsum("bnh,nh->bn", q[:, i], table[i - j + tokens - 1])
    probabilities = softmax(logits / np.sqrt(head_dim), axis=-1)
    context = np.einsum("bnij,bjnh->binh", probabilities, v)
    return np.einsum("binh,nhd->bid", context, w["attention_output/kernel"]) + w["attention_output/bias"], probabilities


def test_offsets_index_every_pair_by_its_distance():
    offsets = relative_offsets(4)
    assert offsets.min() == 0 and offsets.max() == 6
    for i in range(4):
        for j in range(4):
            assert offsets[i, j] == i - j + 3


def test_relative_attention_equals_numpy_reference_on_both_paths():
    rng = np.random.default_rng(0)
    layer = RelativePositionAttention(num_tokens=6, num_heads=2, key_dim=4, name="MultiHeadDotProductAttention_1")
    x = rng.normal(size=(3, 6, 8)).astype("float32")
    layer(x, x)
    for weight in layer.weights:
        weight.assign(rng.normal(0, 0.5, weight.shape).astype("float32"))
    expected, expected_probabilities = numpy_relative_attention(layer, x)
    fused = to_numpy(layer(x, x))  # ops.dot_product_attention with the bias
    explicit, probabilities = layer(x, x, return_attention_scores=True)
    np.testing.assert_allclose(fused, expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(explicit), expected, atol=1e-5)
    np.testing.assert_allclose(to_numpy(probabilities), expected_probabilities, atol=1e-6)


def test_zero_table_is_plain_attention_and_the_table_matters():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    relative = RelativePositionAttention(num_tokens=5, num_heads=2, key_dim=4)
    plain = keras.layers.MultiHeadAttention(num_heads=2, key_dim=4)
    relative(x, x), plain(x, x)
    plain.set_weights([to_numpy(w) for w in relative.weights if w is not relative.relative_embedding])
    relative.relative_embedding.assign(np.zeros(relative.relative_embedding.shape, "float32"))
    np.testing.assert_allclose(to_numpy(relative(x, x)), to_numpy(plain(x, x)), atol=1e-6)
    relative.relative_embedding.assign(rng.normal(0, 1, relative.relative_embedding.shape).astype("float32"))
    assert np.abs(to_numpy(relative(x, x)) - to_numpy(plain(x, x))).max() > 1e-3


def test_wrong_token_count_is_a_clear_error():
    layer = RelativePositionAttention(num_tokens=5, num_heads=2, key_dim=4)
    with pytest.raises(ValueError, match="made for 5 tokens.*query_shape=\\(2, 7, 8\\)"):
        layer(np.zeros((2, 7, 8), "float32"), np.zeros((2, 7, 8), "float32"))
    with pytest.raises(ValueError, match="num_tokens"):
        RelativePositionAttention(num_tokens=0, num_heads=2, key_dim=4)


def test_relative_model_adds_one_table_per_block():
    model = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 12, 3), classes=3, position_embedding="relative")
    plain = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 12, 3), classes=3, position_embedding="none")
    tokens = 1 + 2 * 3
    assert model.count_params() - plain.count_params() == 2 * (2 * tokens - 1) * 16
    block = model.get_layer("encoderblock_0")
    assert isinstance(block.attention, RelativePositionAttention) and block.attention.num_tokens == tokens
    out = keras_vit.forward_intermediates(model, np.zeros((1, 8, 12, 3), "float32"))
    assert out["attention"][0].shape == (1, 2, tokens, tokens)


@pytest.mark.parametrize("kind", vit_layers.POSITION_EMBEDDINGS)
@pytest.mark.parametrize("classifier", ["token", "gap"])
def test_every_position_embedding_trains_a_step_and_round_trips(kind, classifier, tmp_path):
    keras.utils.set_random_seed(0)
    model = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 8, 3), classes=3, position_embedding=kind,
                          classifier=classifier, classifier_activation=None)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [to_numpy(w).copy() for w in model.trainable_weights]
    # The head starts at zero, so the first step moves only the head; the second moves everything.
    losses = [model.train_on_batch(x, y) for _ in range(2)]
    assert np.all(np.isfinite(losses))
    changed = [not np.array_equal(b, to_numpy(w)) for b, w in zip(before, model.trainable_weights)]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(to_numpy(restored(x)), to_numpy(model(x)))


def test_load_weights_names_what_the_official_layout_cannot_hold(tmp_path):
    source = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 8, 3), classes=3, dropout_rate=0.1, drop_path_rate=0.1)
    source.save_weights(tmp_path / "plain.weights.h5")
    plain = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 8, 3), classes=3, dropout_rate=0.1, drop_path_rate=0.1)
    assert keras_vit.load_weights(plain, str(tmp_path / "plain.weights.h5"))["not_in_layout"] == []
    saved = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 8, 3), classes=3, position_embedding="relative")
    saved.save_weights(tmp_path / "relative.weights.h5")
    relative = keras_vit.ViT(2, 16, 32, 2, 4, input_shape=(8, 8, 3), classes=3, position_embedding="relative")
    report = keras_vit.load_weights(relative, str(tmp_path / "relative.weights.h5"))
    assert [path.split("/")[-1] for path in report["not_in_layout"]] == ["relative_embedding"] * 2
    # The complete copy of such a model is Keras' own: model.save / load_model (tested above).
