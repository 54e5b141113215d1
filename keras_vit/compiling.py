"""Whether the code being traced will be compiled by XLA, which decides how keras_vit differentiates.

keras_vit's LayerNorm and GELU have their gradients written out (`keras_vit.normalization`,
`keras_vit.activations`): on TensorFlow's plain graph executor and on PyTorch that saves elementwise
work and memory. XLA fuses the automatically derived gradients on its own, and there the written-out
ones (which recompute from the input) were slower (`benchmarks/RESULTS.md`, "Second round"), so
under XLA the automatic ones are kept.
"""

import keras


def xla_compiling():
    """True while tracing for XLA: on JAX always (everything is jitted), on TensorFlow inside a
    `tf.function(jit_compile=True)` (as Keras' train step with `jit_compile=True`), else False."""
    backend = keras.backend.backend()
    if backend == "jax":
        return True
    if backend != "tensorflow":
        return False
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_util

    if tf.executing_eagerly():
        return False
    # The XLA control-flow context is what `tf.function(jit_compile=True)` enters while tracing.
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def after(upstream, *tensors):
    """`tensors`, made to wait for `upstream` (a custom gradient's incoming gradient) on TensorFlow.

    TensorFlow's graph executor runs an op as soon as its inputs exist. A backward pass that
    recomputes something from forward tensors alone (keras_vit's GELU and LayerNorm gradients)
    would then run during the forward pass and hold its result until the backward pass reaches
    it, which costs the memory the recomputation is there to save. Other backends run the backward
    pass when it is asked for. Returns a list.
    """
    if keras.backend.backend() != "tensorflow":
        return list(tensors)
    import tensorflow as tf

    with tf.control_dependencies([upstream]):
        return [tf.identity(t) for t in tensors]
