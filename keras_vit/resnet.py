"""The ResNet stem of the hybrid Vision Transformers, written with `keras.ops` only.

Section 3.1 of "An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR
2021, https://arxiv.org/abs/2010.11929): the patch embedding is applied to
the feature map of a ResNet instead of to raw pixels. As in the official code
it is a ResNet with the changes of BiT (Kolesnikov et al., 2020,
https://arxiv.org/abs/1912.11370): weight-standardised convolutions and
GroupNorm with 32 groups instead of BatchNorm; a 7x7/2 root with a 3x3/2 max
pool, then stages of bottleneck units, each convolution followed by its
GroupNorm. Sublayers are named like the
official checkpoint (`conv_root`, `gn_root`, `block{s}/unit{u}/conv1`, ...),
and `ResNetStem.official_variables()` maps those names to the variables.
"""

import keras
from keras import ops

from keras_vit.layers import PACKAGE
from keras_vit.variants import RESNET_WIDTH, resnet_config, resnet_stride

GROUPS = 32
GROUP_NORM_EPSILON = 1e-6


def _group_norm(name, **kwargs):
    return keras.layers.GroupNormalization(groups=GROUPS, epsilon=GROUP_NORM_EPSILON, name=name, **kwargs)


def max_pool_same(x, size=3, stride=2):
    """`MaxPooling2D(size, stride, padding="same")` as the maximum of its
    `size * size` strided slices of the input padded with -inf.

    The values are the same; the gradient is too, except where the largest
    inputs of a window tie. On XLA:CPU the pool's own gradient
    (SelectAndScatter) cost as much as the 7x7 root convolution in a
    microbenchmark of the root, and this one half as much, so `ResNetStem`
    trains with it; on the whole demo model the gain did not show
    (benchmarks/RESULTS.md, "Training").

    Example:

    >>> x = np.arange(25.0).reshape(1, 5, 5, 1)
    >>> np.array_equal(max_pool_same(x), keras.layers.MaxPooling2D(3, 2, padding="same")(x))
    True
    """
    out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    pad_h = max((out_h - 1) * stride + size - x.shape[1], 0)
    pad_w = max((out_w - 1) * stride + size - x.shape[2], 0)
    x = ops.pad(x, [[0, 0], [pad_h // 2, pad_h - pad_h // 2], [pad_w // 2, pad_w - pad_w // 2], [0, 0]],
                constant_values=float("-inf"))
    pooled = None
    for i in range(size):
        for j in range(size):
            window = x[:, i : i + stride * (out_h - 1) + 1 : stride, j : j + stride * (out_w - 1) + 1 : stride, :]
            pooled = window if pooled is None else ops.maximum(pooled, window)
    return pooled


@keras.saving.register_keras_serializable(package=PACKAGE)
class StdConv2D(keras.layers.Conv2D):
    """Conv2D with weight standardisation ("Micro-Batch Training with
    Batch-Channel Normalization and Weight Standardization", Qiao et al.,
    2019, https://arxiv.org/abs/1903.10520).

    Each output channel's kernel is standardised over (height, width, input
    channels) on every call: `(w - mean(w)) / (std(w) + epsilon)`, with the
    epsilon added to the standard deviation as in the official code. The
    defaults are those of the hybrid ViT: TF "SAME" padding, no bias.

    Args:
        filters: int, output channels.
        kernel_size: int or pair.
        strides: int or pair. Defaults to `1`.
        epsilon: float. Defaults to `1e-5`.
        **kwargs: other `keras.layers.Conv2D` arguments.

    Example:

    >>> conv = StdConv2D(8, 3, strides=2)
    >>> tuple(conv(np.ones((1, 9, 9, 4))).shape)
    (1, 5, 5, 8)
    """

    def __init__(self, filters, kernel_size, strides=1, epsilon=1e-5, **kwargs):
        kwargs.setdefault("padding", "same")
        kwargs.setdefault("use_bias", False)
        kwargs.setdefault("kernel_initializer", "lecun_normal")
        super().__init__(filters, kernel_size, strides=strides, **kwargs)
        self.epsilon = epsilon

    def standardized_kernel(self, kernel):
        centred = kernel - ops.mean(kernel, axis=(0, 1, 2), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(centred), axis=(0, 1, 2), keepdims=True))
        return centred / (std + self.epsilon)

    def convolution_op(self, inputs, kernel):
        return super().convolution_op(inputs, self.standardized_kernel(kernel))

    def get_config(self):
        config = super().get_config()
        config["epsilon"] = self.epsilon
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class BottleneckUnit(keras.layers.Layer):
    """A bottleneck unit of the hybrid's ResNet.

    `relu(shortcut + gn3(conv3(relu(gn2(conv2(relu(gn1(conv1(x)))))))))` with
    1x1, 3x3 (carrying the stride) and 1x1 `StdConv2D`s; the shortcut is
    `gn_proj(conv_proj(x))` (1x1, strided) when the shape changes, else `x`.
    `gn3` starts with a zero scale, so a new unit starts as the identity.

    Args:
        width: int, bottleneck width; the output has `4 * width` channels.
        strides: int, stride of the 3x3 convolution and the projection.
            Defaults to `1`.

    Call arguments:
        inputs: tensor of shape `(batch, height, width, channels)`.

    Returns:
        Tensor of shape `(batch, ceil(height / strides), ceil(width / strides), 4 * width)`.

    Example:

    >>> tuple(BottleneckUnit(32, strides=2)(np.ones((1, 8, 8, 64))).shape)
    (1, 4, 4, 128)
    """

    def __init__(self, width, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.strides = strides
        common = {"dtype": self.dtype_policy}
        self.conv1 = StdConv2D(width, 1, name="conv1", **common)
        self.gn1 = _group_norm("gn1", **common)
        self.conv2 = StdConv2D(width, 3, strides=strides, name="conv2", **common)
        self.gn2 = _group_norm("gn2", **common)
        self.conv3 = StdConv2D(4 * width, 1, name="conv3", **common)
        self.gn3 = _group_norm("gn3", gamma_initializer="zeros", **common)
        self.conv_proj = self.gn_proj = None

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if input_shape[-1] != 4 * self.width or self.strides != 1:
            common = {"dtype": self.dtype_policy}
            self.conv_proj = StdConv2D(4 * self.width, 1, strides=self.strides, name="conv_proj", **common)
            self.gn_proj = _group_norm("gn_proj", **common)
            self.conv_proj.build(input_shape)
            self.gn_proj.build(self.compute_output_shape(input_shape))
        self.conv1.build(input_shape)
        inner = input_shape[:-1] + (self.width,)
        self.gn1.build(inner)
        self.conv2.build(inner)
        inner = self.conv2.compute_output_shape(inner)
        self.gn2.build(inner)
        self.conv3.build(inner)
        self.gn3.build(self.compute_output_shape(input_shape))

    def call(self, inputs):
        shortcut = inputs
        if self.conv_proj is not None:
            shortcut = self.gn_proj(self.conv_proj(inputs))
        y = ops.relu(self.gn1(self.conv1(inputs)))
        y = ops.relu(self.gn2(self.conv2(y)))
        y = self.gn3(self.conv3(y))
        return ops.relu(shortcut + y)

    def compute_output_shape(self, input_shape):
        return self.conv2.compute_output_shape(tuple(input_shape)[:-1] + (self.width,))[:-1] + (4 * self.width,)

    def official_variables(self, prefix):
        names = ("conv1", "gn1", "conv2", "gn2", "conv3", "gn3") + (("conv_proj", "gn_proj") if self.conv_proj else ())
        out = {}
        for name in names:
            layer = getattr(self, name)
            if name.startswith("conv"):
                out[f"{prefix}{name}/kernel"] = layer.kernel
            else:
                out[f"{prefix}{name}/scale"], out[f"{prefix}{name}/bias"] = layer.gamma, layer.beta
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"width": self.width, "strides": self.strides})
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResNetStem(keras.layers.Layer):
    """The ResNet in front of a hybrid ViT, as one layer.

    Root: `StdConv2D` 7x7 stride 2 (`conv_root`), GroupNorm (`gn_root`),
    ReLU, max pool 3x3 stride 2 "SAME". Then one stage per entry of
    `num_layers`, of that many `BottleneckUnit`s: stage `s` (from 0) has
    bottleneck width `width * 2**s`, and its first unit has stride 1 in the
    first stage and 2 after. The total stride is 4 with no stage, else
    `4 * 2**(len(num_layers) - 1)`: 16 for ResNet-50's (3, 4, 9).

    Args:
        num_layers: tuple of ints, units per stage, e.g. `(3, 4, 9)`.
            Defaults to `(3, 4, 9)`.
        width: int, root width, a multiple of 32. Defaults to `64`.

    Call arguments:
        inputs: images of shape `(batch, height, width, channels)`.

    Returns:
        Feature map of shape `(batch, ceil(height / stride), ceil(width /
        stride), 4 * width * 2**(stages - 1))` (`width` channels with no stage).

    Example:

    >>> stem = ResNetStem(num_layers=(1, 1), width=32)
    >>> stem.stride, tuple(stem(np.zeros((1, 32, 32, 3))).shape)
    (8, (1, 4, 4, 256))
    """

    def __init__(self, num_layers=(3, 4, 9), width=RESNET_WIDTH, **kwargs):
        super().__init__(**kwargs)
        config = resnet_config({"num_layers": num_layers, "width": width})
        self.num_layers = config["num_layers"]
        self.width = config["width"]
        common = {"dtype": self.dtype_policy}
        self.conv_root = StdConv2D(self.width, 7, strides=2, name="conv_root", **common)
        self.gn_root = _group_norm("gn_root", **common)
        self.pool = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool", **common)
        self.residual_units = [
            BottleneckUnit(self.width * 2**s, strides=2 if s and not u else 1, name=f"block{s + 1}_unit{u + 1}", **common)
            for s, depth in enumerate(self.num_layers)
            for u in range(depth)
        ]

    @property
    def stride(self):
        return resnet_stride({"num_layers": self.num_layers})

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.conv_root.build(shape)
        shape = self.conv_root.compute_output_shape(shape)
        self.gn_root.build(shape)
        shape = self.pool.compute_output_shape(shape)
        for unit in self.residual_units:
            unit.build(shape)
            shape = unit.compute_output_shape(shape)

    def call(self, inputs, training=None):
        x = ops.relu(self.gn_root(self.conv_root(inputs)))
        # The same values either way; the slices' gradient is the cheaper one
        # to train with, the pool the one op LiteRT and XNNPACK run at inference.
        x = max_pool_same(x) if training else self.pool(x)
        for unit in self.residual_units:
            x = unit(x)
        return x

    def compute_output_shape(self, input_shape):
        shape = self.pool.compute_output_shape(self.conv_root.compute_output_shape(tuple(input_shape)))
        for unit in self.residual_units:
            shape = unit.compute_output_shape(shape)
        return shape

    def official_variables(self):
        """The variables keyed by their official checkpoint names (`conv_root/kernel`, `block1/unit1/gn1/scale`, ...)."""
        out = {"conv_root/kernel": self.conv_root.kernel, "gn_root/scale": self.gn_root.gamma,
               "gn_root/bias": self.gn_root.beta}
        for unit in self.residual_units:
            out.update(unit.official_variables(unit.name.replace("_", "/") + "/"))
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"num_layers": self.num_layers, "width": self.width})
        return config
