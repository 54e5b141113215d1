"""Looking inside a ViT: attention rollout and the paper's Figure 6 and 7 analyses.

Each analysis is a pure function returning NumPy arrays; `keras_vit.plots`
draws them. All of them read the model's own layers through
`keras_vit.forward_intermediates` (no second model, no weight copies), so they
work on any model this project builds, at any input size.
"""

import keras
import numpy as np

from keras_vit.model import forward_intermediates


def _num_prefix_tokens(model):
    return model.get_layer("posembed_input").num_prefix_tokens


def _grid_size(model):
    return model.get_layer("posembed_input").grid_size


def is_hybrid(model):
    """Whether `model` has a ResNet stem (the paper's hybrid), whose embedding reads features, not pixels."""
    return any(layer.name == "resnet" for layer in model.layers)


def _token_stride(model, images):
    """Pixels between neighbouring tokens: the patch size, times the ResNet stem's stride in a hybrid."""
    grid = _grid_size(model)
    return tuple(size / cells for size, cells in zip(images.shape[1:3], grid))


def attention_rollout(attentions, residual=True):
    """Attention rollout (Abnar & Zuidema, 2020, https://arxiv.org/abs/2005.00928).

    Per layer: average the heads, add the identity for the residual
    connection, renormalise each row to sum to 1; then multiply the layers
    through, first layer on the right.

    Args:
        attentions: list of arrays `(batch, heads, tokens, tokens)`, one per
            layer, first layer first (as `forward_intermediates` returns).
        residual: bool, whether to add the identity. Defaults to `True`.

    Returns:
        Array `(batch, tokens, tokens)`; row `i` is how much input token `j`
        flows into output token `i`. Rows are non-negative and sum to 1.

    Example:

    >>> a = np.full((1, 2, 3, 3), 1 / 3)
    >>> attention_rollout([a, a])[0].sum(axis=-1)
    array([1., 1., 1.])
    """
    rollout = None
    for layer in attentions:
        joint = np.asarray(keras.ops.convert_to_numpy(layer), dtype="float64").mean(axis=1)
        if residual:
            joint = joint + np.eye(joint.shape[-1])
        joint = joint / joint.sum(axis=-1, keepdims=True)
        rollout = joint if rollout is None else joint @ rollout
    if rollout is None:
        raise ValueError("attention_rollout needs at least one layer of attention. Received: []")
    return rollout


def _upsample(maps, size):
    """Bilinear resize of `(batch, gh, gw)` maps to `size` (height, width)."""
    resized = keras.ops.image.resize(maps[..., None].astype("float32"), size, interpolation="bilinear")
    return keras.ops.convert_to_numpy(resized)[..., 0]


def _normalise(maps):
    low = maps.min(axis=(-2, -1), keepdims=True)
    high = maps.max(axis=(-2, -1), keepdims=True)
    return (maps - low) / np.maximum(high - low, 1e-12)


def attention_map(model, images, upsample=True):
    """The paper's Figure 6: where the model looks, by attention rollout.

    With a class token the map is the class token's row of the rollout;
    a `classifier="gap"` model has none, so its map is the mean of all patch
    rows (how much each patch flows into the pooled representation).

    Args:
        model: a model built by `keras_vit`.
        images: array `(batch, height, width, 3)` as the model takes it.
        upsample: bool, resize the map to the image size. Defaults to `True`.

    Returns:
        Array `(batch, gh, gw)` or `(batch, height, width)`, scaled to [0, 1]
        per image.

    Example:

    >>> model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3))
    >>> attention_map(model, np.zeros((1, 32, 32, 3))).shape
    (1, 32, 32)
    """
    images = np.asarray(images, dtype="float32")
    rollout = attention_rollout(forward_intermediates(model, images)["attention"])
    prefix = _num_prefix_tokens(model)
    patch_rows = rollout[:, 0, prefix:] if prefix else rollout[:, :, :].mean(axis=1)
    maps = _normalise(patch_rows.reshape((len(images),) + _grid_size(model)))
    return _upsample(maps, images.shape[1:3]) if upsample else maps


def last_layer_head_maps(model, images, upsample=True):
    """Per-head attention of the last block, from the class token (or the mean patch query).

    Returns:
        Array `(batch, heads, gh, gw)` (or image-sized), each map in [0, 1].
    """
    images = np.asarray(images, dtype="float32")
    last = keras.ops.convert_to_numpy(forward_intermediates(model, images)["attention"][-1])
    prefix = _num_prefix_tokens(model)
    rows = last[:, :, 0, prefix:] if prefix else last.mean(axis=2)
    batch, heads = rows.shape[:2]
    maps = _normalise(rows.reshape((batch, heads) + _grid_size(model)))
    if not upsample:
        return maps
    flat = _upsample(maps.reshape((batch * heads,) + maps.shape[2:]), images.shape[1:3])
    return flat.reshape((batch, heads) + flat.shape[1:])


def position_embedding_similarity(model):
    """Cosine similarity between the position embeddings of every pair of patches (Figure 7, centre).

    Returns:
        Array `(gh*gw, gh*gw)`: symmetric, ones on the diagonal. Row `i`
        reshaped to the grid is the small map the paper draws for patch `i`.

    Example:

    >>> model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3))
    >>> position_embedding_similarity(model).shape
    (16, 16)
    """
    layer = model.get_layer("posembed_input")
    table = layer.embedding()
    if table is None:
        raise ValueError(
            "This model has no position embeddings to compare. Received: position_embedding='none'"
        )
    table = np.asarray(keras.ops.convert_to_numpy(table), dtype="float64")[0, layer.num_prefix_tokens :]
    unit = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
    return unit @ unit.T


def embedding_filter_components(model, num_components=28):
    """Principal components of the patch-embedding filters (Figure 7, left).

    Each of the D filters is a `(ph, pw, channels)` patch; the components are
    the top right-singular vectors of the centred `(D, ph*pw*channels)` matrix.

    Raises:
        ValueError: for a hybrid, whose embedding does not see pixels.

    Returns:
        `(components, explained)`: components `(n, ph, pw, channels)`,
        orthonormal when flattened; `explained` the share of variance of
        each, decreasing.

    Example:

    >>> model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3))
    >>> components, explained = embedding_filter_components(model, 4)
    >>> components.shape, bool(np.all(np.diff(explained) <= 0))
    ((4, 8, 8, 3), True)
    """
    if is_hybrid(model):
        raise ValueError(
            "A hybrid ViT's embedding reads the ResNet stem's features, not pixels, so its filters are not "
            "images; Figure 7's filters exist for a plain ViT only. Received: a model with a 'resnet' layer"
        )
    kernel = keras.ops.convert_to_numpy(model.get_layer("embedding").projection.kernel)
    ph, pw, channels, width = kernel.shape
    filters = np.asarray(kernel, dtype="float64").reshape(-1, width).T
    filters = filters - filters.mean(axis=0, keepdims=True)
    _, singular, vt = np.linalg.svd(filters, full_matrices=False)
    num_components = min(num_components, vt.shape[0])
    explained = singular**2 / np.sum(singular**2)
    return vt[:num_components].reshape(num_components, ph, pw, channels), explained[:num_components]


def patch_distances(grid_size, patch_size):
    """Pixel distance between the centres of every pair of patches, `(gh*gw, gh*gw)`."""
    gh, gw = grid_size
    rows, cols = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    centres = np.stack([rows.ravel() * patch_size[0], cols.ravel() * patch_size[1]], axis=1)
    return np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=-1)


def mean_attention_distance(model, images):
    """Attention distance per head and layer (Figure 7, right).

    For each query patch, the attention-weighted mean pixel distance to the
    key patches (weights over patch keys renormalised to sum to 1, the class
    token left out), averaged over queries and images. Token centres are one
    image-size / grid-size apart: the patch size in a plain ViT, the patch
    size times the stem's stride in a hybrid.

    Returns:
        Array `(layers, heads)` of distances in pixels.

    Example:

    >>> model = keras_vit.ViT(2, 32, 64, 2, 8, input_shape=(32, 32, 3))
    >>> mean_attention_distance(model, np.zeros((2, 32, 32, 3))).shape
    (2, 2)
    """
    images = np.asarray(images, dtype="float32")
    prefix = _num_prefix_tokens(model)
    distances = patch_distances(_grid_size(model), _token_stride(model, images))
    result = []
    for layer in forward_intermediates(model, images)["attention"]:
        probs = np.asarray(keras.ops.convert_to_numpy(layer), dtype="float64")[:, :, prefix:, prefix:]
        probs = probs / np.maximum(probs.sum(axis=-1, keepdims=True), 1e-12)
        per_query = np.einsum("bhqk,qk->bhq", probs, distances)
        result.append(per_query.mean(axis=(0, 2)))
    return np.stack(result)
