"""keras_vit: the Vision Transformer for TensorFlow and Keras 3.

>>> from keras_vit import ViT_B16
>>> model = ViT_B16(weights=None, classes=10)
"""

from keras_vit import layers, resnet, variants
# Registers the training recipe's schedule, loss and optimizers, so a `.keras`
# file saved with its optimizer loads after `import keras_vit`.
from keras_vit import training
from keras_vit import checkpoints
# Registers PatchCorruption; masked patch prediction pre-training (keras_vit.mpp.mpp_model).
from keras_vit import mpp
from keras_vit.imagenet import decode_predictions, preprocess_input
from keras_vit.loading import load_weights
from keras_vit.model import CONSTRUCTORS, ViT, forward_intermediates
from keras_vit.variants import HYBRID_VARIANTS, VARIANTS, constructor_name

globals().update({constructor_name(v): fn for v, fn in CONSTRUCTORS.items()})

__version__ = "0.1.0"
__all__ = [
    "ViT",
    *(constructor_name(v) for v in (*VARIANTS, *HYBRID_VARIANTS)),
    "decode_predictions",
    "checkpoints",
    "forward_intermediates",
    "load_weights",
    "layers",
    "mpp",
    "preprocess_input",
    "resnet",
    "variants",
]
