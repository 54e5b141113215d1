"""Test set-up: environment for subprocesses; `np` and `keras_vit` for the docstring examples."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tests start Python subprocesses (other backends, workers of a cluster, the
# CLI); they import this checkout whether or not it is pip-installed.
_ROOT = os.path.dirname(os.path.abspath(__file__))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, os.environ.get("PYTHONPATH")) if p)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras_vit  # noqa: E402


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
    doctest_namespace["keras_vit"] = keras_vit
