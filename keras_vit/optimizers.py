"""The recipes' optimizers: Keras' AdamW, Adam and SGD with two changes.

1. `global_clipnorm` clips the gradient summed over all replicas of a
   `tf.distribute` strategy, not each replica's part (`_GlobalNormClipping`).
2. On TensorFlow, each variable's update is one in-place kernel
   (`ResourceApplyAdam`, `ResourceApplyKerasMomentum`) instead of the dozen
   element-wise ops Keras writes out (`_FusedUpdates`). The kernels compute
   the same formulas in the same order (Keras' Adam is
   `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
   `w -= m lr sqrt(1 - b2^t) / (1 - b1^t) / (sqrt(v) + eps)`, which is
   TensorFlow's kernel written out), so results agree to float32 rounding,
   except that Adam's kernel forms `1 - b2` in float32 (0.00099998713 for
   0.999), which moves updates by ~1e-5 relative (`tests/test_optimizers.py`). The point is memory: a ViT has ~16
   variables per block, Keras' updates add ~45 graph nodes for each, and the
   train step's graph, its optimized copy and their kernels cost TensorFlow
   ~13 kB of memory per node whatever the batch size
   (`benchmarks/RESULTS.md`, "Training speed and memory"). AdamW's decoupled
   weight decay is applied in the same place, with the learning rate the
   step already computed, instead of re-evaluating the schedule for every
   variable as Keras' TensorFlow optimizer does.

Other backends, sparse gradients and AMSGrad keep Keras' own update.
"""

import keras


def _tensorflow():
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf


def _tf_variable(variable):
    return variable.value if isinstance(variable, keras.Variable) else variable


class _GlobalNormClipping:
    """Clips by the norm of the gradient summed over replicas, not each replica's.

    Keras clips each replica's gradient before the all-reduce, so under a
    `tf.distribute` strategy `global_clipnorm` would bound the norm of a
    partial gradient. Here the gradients are all-reduced first and clipped as
    a whole; each replica then passes on its 1/replicas share, so the
    optimizer's own all-reduce rebuilds exactly the clipped global gradient.
    """

    def _clip_gradients(self, grads):
        tf = _tensorflow()
        if not self.global_clipnorm or tf is None:
            return super()._clip_gradients(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return super()._clip_gradients(grads)
        present = [i for i, g in enumerate(grads) if g is not None]
        summed = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in present])
        clipped, _ = tf.clip_by_global_norm(summed, self.global_clipnorm)
        grads = list(grads)
        for i, g in zip(present, clipped):
            grads[i] = g / context.num_replicas_in_sync
        return grads


class _FusedUpdates:
    """One TensorFlow kernel per variable update (see the module docstring).

    Subclasses define `_fused_update(tf, gradient, variable, var, lr)` and
    `_fusable(tf, gradient)`, false where Keras' own update must run.
    """

    def _fusable(self, tf, gradient):
        return tf is not None and not isinstance(gradient, tf.IndexedSlices)

    def update_step(self, gradient, variable, learning_rate):
        tf = _tensorflow()
        if tf is None:
            return super().update_step(gradient, variable, learning_rate)
        var = _tf_variable(variable)
        lr = tf.cast(learning_rate, var.dtype)
        if self.weight_decay and self._use_weight_decay(variable):
            var.assign_sub(var * (lr * tf.cast(self.weight_decay, var.dtype)))
        if self._fusable(tf, gradient):
            self._fused_update(tf, tf.cast(gradient, var.dtype), variable, var, lr)
        else:
            super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        # On TensorFlow, `update_step` applies it with the step's learning rate.
        if _tensorflow() is None:
            return super()._apply_weight_decay(variables)

    def _slot(self, slots, variable):
        return _tf_variable(slots[self._get_variable_index(variable)]).handle


class _FusedAdam(_FusedUpdates):
    def _fusable(self, tf, gradient):
        return super()._fusable(tf, gradient) and not self.amsgrad

    def _fused_update(self, tf, gradient, variable, var, lr):
        dtype = var.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=var.handle, m=self._slot(self._momentums, variable), v=self._slot(self._velocities, variable),
            beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step), lr=lr, beta1=beta_1,
            beta2=beta_2, epsilon=tf.cast(self.epsilon, dtype), grad=gradient,
        )


class _FusedMomentum(_FusedUpdates):
    def _fusable(self, tf, gradient):
        return super()._fusable(tf, gradient) and self.momentum != 0

    def _fused_update(self, tf, gradient, variable, var, lr):
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=var.handle, accum=self._slot(self.momentums, variable), lr=lr, grad=gradient,
            momentum=tf.cast(self.momentum, var.dtype), use_nesterov=self.nesterov,
        )


@keras.saving.register_keras_serializable(package="keras_vit")
class AdamW(_GlobalNormClipping, _FusedAdam, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with replica-global clipping and fused TensorFlow updates."""


@keras.saving.register_keras_serializable(package="keras_vit")
class Adam(_GlobalNormClipping, _FusedAdam, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with replica-global clipping and fused TensorFlow updates."""


@keras.saving.register_keras_serializable(package="keras_vit")
class SGD(_GlobalNormClipping, _FusedMomentum, keras.optimizers.SGD):
    """`keras.optimizers.SGD` with replica-global clipping and fused TensorFlow momentum updates."""
