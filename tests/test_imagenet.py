"""ImageNet helpers: the shipped class index and decode_predictions."""

import numpy as np
import pytest

from keras_vit import decode_predictions, imagenet


def test_class_index_is_complete_and_in_ilsvrc_order():
    index = imagenet.class_index()
    assert len(index) == 1000
    ids = [index[str(i)][0] for i in range(1000)]
    assert len(set(ids)) == 1000 and ids == sorted(ids)  # ILSVRC-2012 order is sorted by WordNet id
    assert index["0"] == ["n01440764", "tench"]
    assert index["281"] == ["n02123045", "tabby"]
    assert index["999"][0] == "n15075141"


def test_decode_predictions_format_and_order():
    preds = np.zeros((2, 1000), "float32")
    preds[0, [281, 285, 7]] = [0.5, 0.3, 0.2]
    preds[1, 999] = 1.0
    decoded = decode_predictions(preds, top=3)
    assert [d[1] for d in decoded[0]] == ["tabby", "Egyptian_cat", "cock"]
    assert decoded[0][0] == ("n02123045", "tabby", np.float32(0.5))
    assert len(decoded[1]) == 3 and decoded[1][0][0] == "n15075141"


def test_decode_predictions_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"\(samples, 1000\)\)\. Received array with shape: \(2, 10\)"):
        decode_predictions(np.zeros((2, 10)))
