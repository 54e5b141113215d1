"""Distribution strategies for training ViTs.

One flag picks the strategy: `"tpu"` (Cloud TPU through
`TPUClusterResolver`), `"mirrored"` (all local GPUs, or the listed devices),
`"multiworker"` (`MultiWorkerMirroredStrategy` configured by `TF_CONFIG`),
`"default"` (one device). `keras_vit.resume` makes a killed or preempted run
resume from its last finished epoch.
"""

import json
import os
import tempfile

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")


def resolve_strategy(name="default", tpu=None, devices=None):
    """Returns the `tf.distribute.Strategy` named by a flag.

    Args:
        name: `"default"`, `"mirrored"`, `"multiworker"` or `"tpu"`.
        tpu: TPU name or `grpc://` address for `"tpu"`; `None` or `"local"`
            looks for a TPU attached to this VM.
        devices: optional device list for `"mirrored"` (e.g.
            `["/cpu:0", "/cpu:1"]` with logical CPU devices).

    Returns:
        A `tf.distribute.Strategy`; build and compile the model in its
        `scope()`.

    Example:

    >>> resolve_strategy("default").num_replicas_in_sync
    1
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}. Received: strategy={name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices=devices)
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "strategy='multiworker' reads the cluster from the TF_CONFIG environment variable, "
                "which is not set. Expected e.g. TF_CONFIG='{\"cluster\": {\"worker\": "
                "[\"host1:port\", \"host2:port\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}'"
            )
        json.loads(os.environ["TF_CONFIG"])  # Fail here, with the JSON error, not deep in TF.
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=None if tpu in (None, "local") else tpu
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise RuntimeError(
            f"strategy='tpu' found no reachable TPU (tpu={tpu!r}): {error}. Run on a TPU VM, "
            "or pass --tpu with the TPU's name or grpc:// address."
        ) from error
    return tf.distribute.TPUStrategy(resolver)


def scale_learning_rate(learning_rate, global_batch_size, base_batch_size=None):
    """Scales a learning rate linearly with the batch size.

    Recipes state their learning rate for a base batch (4096 for the paper's
    pre-training, 512 for fine-tuning); `lr * global / base` keeps the update
    size per example when the batch changes. `base_batch_size=None` returns
    `learning_rate` unchanged.

    Example:

    >>> scale_learning_rate(1e-3, 1024, 4096)
    0.00025
    """
    if base_batch_size is None:
        return learning_rate
    if global_batch_size <= 0 or base_batch_size <= 0:
        raise ValueError(
            "Batch sizes must be positive. "
            f"Received: global_batch_size={global_batch_size}, base_batch_size={base_batch_size}"
        )
    return learning_rate * global_batch_size / base_batch_size


def global_batch_size(batch_size, strategy, per_replica=False):
    """Returns the global batch size for `strategy`.

    `batch_size` is global unless `per_replica=True`, in which case it is
    multiplied by the number of replicas. A global batch must split evenly.
    """
    replicas = strategy.num_replicas_in_sync
    if per_replica:
        return batch_size * replicas
    if batch_size % replicas:
        raise ValueError(
            f"The global batch size must be divisible by the {replicas} replicas. "
            f"Received: batch_size={batch_size}"
        )
    return batch_size


def is_chief(strategy=None):
    """True on the worker that writes checkpoints, logs and the final model."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type is None or task_type == "chief" or (task_type == "worker" and task_id == 0
                                                         and "chief" not in resolver.cluster_spec().as_dict())


def writable_dir(path, strategy=None):
    """`path` on the chief; a private temporary folder on other workers.

    Every worker takes part in saving under MultiWorkerMirroredStrategy, but
    only the chief's files are kept: the others must not overwrite them.
    """
    if is_chief(strategy):
        return path
    return tempfile.mkdtemp(prefix="keras_vit_worker_")


def _patch_keras_metric_reduction():
    """Lets Keras 3 reduce scalar logs under MultiWorkerMirroredStrategy.

    Keras (3.15, TF backend) reduces every per-replica log with
    `strategy.reduce("MEAN", value, axis=0)`, which fails on the scalar
    loss and metrics when the strategy is multi-worker
    (keras-team/keras#20585). Scalars are reduced with `axis=None` instead.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_keras_vit_patched", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):

            def reduce(value):
                if not isinstance(value, tf.distribute.DistributedValues):
                    return value
                rank = strategy.experimental_local_results(value)[0].shape.rank
                return strategy.reduce("MEAN", value, axis=0 if rank else None)

            return tf.nest.map_structure(reduce, values)
        return original(values, strategy, reduction)

    reduce_per_replica._keras_vit_patched = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def prepare_multiworker_model(model, strategy, label_shape=()):
    """Builds a compiled model's training state for MultiWorkerMirroredStrategy.

    Keras builds the optimizer and metrics from a first batch that it
    averages across replicas with a nested `strategy.reduce`, which
    multi-worker strategies do not support (keras-team/keras#20585). Here
    they are built from a zero batch of the right shapes instead, and that
    first-batch build is skipped. A no-op for other strategies.

    Args:
        model: a compiled model, created under `strategy.scope()`.
        strategy: the strategy.
        label_shape: shape of one label: `()` for integer labels,
            `(classes,)` for one-hot labels.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    _patch_keras_metric_reduction()
    images = tf.zeros((2,) + tuple(model.input_shape[1:]), tf.float32)
    labels = tf.zeros((2,) + tuple(label_shape), tf.float32 if label_shape else tf.int64)
    with strategy.scope():
        model._symbolic_build(data_batch=(images, labels))
    model._maybe_symbolic_build = lambda *args, **kwargs: None
    return model
