"""Resizing learned position embeddings for another patch grid.

A ViT trained at one resolution is fine-tuned or evaluated at another by
resizing the grid part of its position embeddings (the prefix rows, e.g. the
class token's, are kept). Two methods:

- `"official"`: the official `interpolate_posembed` of
  google-research/vision_transformer, `scipy.ndimage.zoom(order=1)` on the
  `(gh, gw, D)` grid, i.e. bilinear with corner-aligned samples.
- `"bicubic"`: timm's `resample_abs_pos_embed` default, PyTorch's
  `interpolate(mode="bicubic", antialias=True, align_corners=False)`, written
  here in NumPy (Keys cubic with a=-0.5, half-pixel centres, kernel stretched
  when shrinking, weights renormalised at the borders).
"""

import numpy as np
import scipy.ndimage

RESAMPLE_METHODS = ("official", "bicubic")


def _grid_pair(value, name):
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    value = tuple(int(v) for v in value)
    if len(value) != 2 or min(value) < 1:
        raise ValueError(f"`{name}` must be a positive int or a pair (height, width). Received: {name}={value}")
    return value


def infer_grid(num_patch_tokens, hint=None):
    """Returns the patch grid of `num_patch_tokens` rows: `hint` if it fits, else the square one."""
    if hint is not None and hint[0] * hint[1] == num_patch_tokens:
        return tuple(hint)
    side = int(round(num_patch_tokens**0.5))
    if side * side != num_patch_tokens:
        raise ValueError(
            "Cannot tell the patch grid of a position embedding with "
            f"{num_patch_tokens} patch rows: it is not square. Pass `old_grid=(height, width)`."
        )
    return (side, side)


def _cubic_aa_matrix(in_size, out_size):
    """The (out, in) matrix of PyTorch's antialiased bicubic resize along one axis."""
    a = -0.5

    def kernel(x):
        x = np.abs(x)
        return np.where(
            x < 1.0,
            ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0,
            np.where(x < 2.0, ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a, 0.0),
        )

    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    matrix = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        taps = kernel((np.arange(lo, hi) - center + 0.5) * invscale)
        matrix[i, lo:hi] = taps / taps.sum()
    return matrix


def resample_position_embedding(posemb, new_grid, num_prefix_tokens=1, method="official", old_grid=None):
    """Resizes a learned position embedding to another patch grid.

    The first `num_prefix_tokens` rows (the class token's) are kept; the rest
    are the row-major `old_grid` and are resized to `new_grid`.

    Args:
        posemb: array of shape `(1, tokens, D)` or `(tokens, D)`.
        new_grid: int or pair `(height, width)`, the target patch grid
            (non-square grids work).
        num_prefix_tokens: int, rows before the grid. Defaults to `1`.
        method: `"official"` (bilinear, corner-aligned:
            `scipy.ndimage.zoom(order=1)`, as the official code) or
            `"bicubic"` (timm's antialiased bicubic). Defaults to
            `"official"`.
        old_grid: optional pair, the grid of `posemb`; defaults to the square
            grid that fits.

    Returns:
        A float32 NumPy array of shape `(1, num_prefix_tokens + h * w, D)`
        (or without the leading 1, like `posemb`).

    Example:

    >>> posemb = np.random.rand(1, 1 + 4 * 4, 8)
    >>> out = keras_vit.checkpoints.resample_position_embedding(posemb, (6, 8))
    >>> out.shape
    (1, 49, 8)
    >>> bool(np.allclose(out[0, 0], posemb[0, 0]))
    True
    """
    if method not in RESAMPLE_METHODS:
        raise ValueError(f"`method` must be one of {RESAMPLE_METHODS}. Received: method={method!r}")
    posemb = np.asarray(posemb)
    squeeze = posemb.ndim == 2
    if squeeze:
        posemb = posemb[None]
    if posemb.ndim != 3 or posemb.shape[0] != 1:
        raise ValueError(
            "`posemb` must have shape (1, tokens, D) or (tokens, D). "
            f"Received: posemb.shape={tuple(np.shape(posemb))}"
        )
    new_grid = _grid_pair(new_grid, "new_grid")
    prefix, grid = posemb[0, :num_prefix_tokens], posemb[0, num_prefix_tokens:]
    old_grid = infer_grid(len(grid), None if old_grid is None else _grid_pair(old_grid, "old_grid"))
    if old_grid[0] * old_grid[1] != len(grid):
        raise ValueError(
            f"`old_grid`={old_grid} does not fit {len(grid)} patch rows. Received: posemb.shape={posemb.shape}"
        )
    grid = grid.reshape(old_grid[0], old_grid[1], -1).astype(np.float64)
    if old_grid != new_grid:
        if method == "official":
            zoom = (new_grid[0] / old_grid[0], new_grid[1] / old_grid[1], 1)
            grid = scipy.ndimage.zoom(grid, zoom, order=1)
        else:
            rows = _cubic_aa_matrix(old_grid[0], new_grid[0])
            cols = _cubic_aa_matrix(old_grid[1], new_grid[1])
            grid = np.einsum("ih,hwd,jw->ijd", rows, grid, cols)
    out = np.concatenate([prefix.astype(np.float64), grid.reshape(new_grid[0] * new_grid[1], -1)])
    out = out.astype(np.float32)
    return out if squeeze else out[None]
