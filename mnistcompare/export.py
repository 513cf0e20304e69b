"""SavedModel export for any TensorFlow program (no mnistcompare needed to load it).

    m = tf.saved_model.load(path)
    m.serve(image_a, image_b)        # float32 [B,14,14,1], pixel scale 0..255, 2x2-pooled
    m.serve_mnist(image_a, image_b)  # uint8 (or int32, 0..255) [B,28,28], raw MNIST images
    m.serve({"image_a": a, "image_b": b})   # either, with the two images in one dict
    # -> {"compare": [B] P(a <= b), "digit_a": [B,10], "digit_b": [B,10]} (digits where the model has them)

`serve` is also `serving_default`. It holds the model's inference form (`serving_model`), which runs
wherever TensorFlow does (TF Serving, the TF1 loader, TFLite, TFSMLayer); `xla=True`: faster, needs XLA.
"""
import os
import shutil

from mnistcompare.runtime import quiet_tensorflow

quiet_tensorflow()  # TensorFlow loaded as the commands load it: quiet, with their kernels (runtime.py)

import keras
import numpy as np
import tensorflow as tf

from mnistcompare.errors import RunError, UserError
from mnistcompare.files import TEMPORARY
from mnistcompare.layers import PooledConv
from mnistcompare.models import build_model


def serving_model(model, cfg, xla=False):
    """`model` rebuilt for inference with its weights (`build_model(..., serving=True)`): shared towers
    called on each image apart, in parallel, and (xla=True) a first conv with its BatchNorm folded into one
    PooledConv (more pairs/s, docs/performance.md). The same outputs."""
    twin = build_model(cfg, serving=True, xla=xla)
    try:
        _copy_weights(model, twin)
    except ValueError as e:  # no such layer, or weights of other shapes
        raise UserError(f"the model is not one of this Config ({cfg.arch}): {str(e).splitlines()[0][:120]}") from None
    return twin


def _copy_weights(source, target):
    """Layer by layer, by name; nested models (towers) recursively."""
    for layer in target.layers:
        if isinstance(layer, keras.Model):
            _copy_weights(source.get_layer(layer.name), layer)
        elif isinstance(layer, PooledConv):
            kernel, *bias = source.get_layer(layer.name).get_weights()
            bias = bias[0] if bias else np.zeros(kernel.shape[-1], kernel.dtype)  # none before batch-norm
            if any(other.name == f"{layer.name}_bn" for other in source.layers):
                bn = source.get_layer(f"{layer.name}_bn")
                gamma, beta, mean, variance = bn.get_weights()
                scale = gamma / np.sqrt(variance + bn.epsilon)
                kernel, bias = kernel * scale, (bias - mean) * scale + beta
            layer.set_weights([kernel, bias])
        elif layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def export_saved_model(model, cfg, path, xla=False):
    """Write `model` (built from `cfg`) as a SavedModel with the endpoints above, each taking two images or
    one dict of them (as TFSMLayer passes). xla=True: a server must run XLA (TF Serving:
    --xla_cpu_compilation_enabled=true)."""
    model = serving_model(model, cfg, xla)

    def outputs(image_a, image_b):
        checks = [tf.debugging.assert_equal(tf.shape(image_a)[0], tf.shape(image_b)[0],
                                            message="image_a and image_b must hold the same number of images")]
        for x in (image_a, image_b):  # NaN fails both comparisons: refused with the rest
            checks.append(tf.debugging.Assert(tf.reduce_all((x >= 0) & (x <= 255)),
                                              ["pixels must be finite numbers in 0..255"]))
        with tf.control_dependencies(checks):
            # (else two batch sizes fail in the model's shape inference, before the check runs)
            image_a, image_b = (tf.compat.v1.placeholder_with_default(x, [None, *x.shape[1:]])
                                for x in (image_a, image_b))

        # No images: outputs of no rows, from one blank pair cut off (convolutions fail on an empty batch).
        n = tf.shape(image_a)[0]
        pad = [[0, 1 - tf.minimum(n, 1)], [0, 0], [0, 0], [0, 0]]
        # (the shape restated by a reshape: TFLite's built-in convolution takes no unknown image shape)
        out = answer(*(tf.reshape(tf.pad(x, pad), [-1, *x.shape[1:]]) for x in (image_a, image_b)))
        return {name: value[:n] for name, value in out.items()}

    # The model traced once, as a concrete function every endpoint calls: tracing it in each of six signatures made
    # most of an export's time, and saving retraces every tf.function (tensorflow#56370).
    image = tf.TensorSpec([None, 14, 14, 1], tf.float32)

    # autograph=False: no Python branch depends on a tensor; converting took 0.23 s of a 1.6 s export
    def model_answer(image_a, image_b):
        out = model({"image_a": image_a, "image_b": image_b}, training=False)
        return {"compare": tf.squeeze(out["compare"], axis=-1),
                **{name: out[name] for name in ("digit_a", "digit_b") if name in out}}
    answer = tf.function(model_answer, autograph=False).get_concrete_function(image, image)

    def pool(images):
        if images.dtype != tf.uint8:  # other integer types: refused outside 0..255, never wrapped
            tf.debugging.assert_less_equal(tf.reduce_max(images), tf.constant(255, images.dtype),
                                           message="raw MNIST pixels are 0..255")
            tf.debugging.assert_greater_equal(tf.reduce_min(images), tf.constant(0, images.dtype),
                                              message="raw MNIST pixels are 0..255")
        x = tf.cast(images, tf.float32)[..., None]
        return tf.nn.avg_pool2d(x, ksize=2, strides=2, padding="VALID")

    @tf.function(autograph=False)
    def serve(image_a, image_b=None):
        if isinstance(image_a, dict):
            image_a, image_b = image_a["image_a"], image_a["image_b"]
        return outputs(image_a, image_b)

    @tf.function(autograph=False)
    def serve_mnist(image_a, image_b=None):
        if isinstance(image_a, dict):
            image_a, image_b = image_a["image_a"], image_a["image_b"]
        return outputs(pool(image_a), pool(image_b))

    def traced(endpoint, shape, dtype):
        """Both forms of `endpoint`. The dict's images are named as TensorFlow names them inside the argument
        `image_a`: named otherwise, saving traced each dict form again, 9 traces, 1 s of a 2.5 s export."""
        endpoint.get_concrete_function(*(tf.TensorSpec(shape, dtype, name=k) for k in ("image_a", "image_b")))
        endpoint.get_concrete_function({k: tf.TensorSpec(shape, dtype, name=f"image_a_{k}") for k in ("image_a",
                                                                                                     "image_b")})

    traced(serve, [None, 14, 14, 1], tf.float32)  # the first traced: the serving_default signature
    for dtype in (tf.uint8, tf.int32):
        traced(serve_mnist, [None, 28, 28], dtype)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)  # the first endpoint is also serving_default
    archive.add_endpoint("serve_mnist", serve_mnist)
    # Written beside it and renamed: a failed write leaves no half SavedModel, nor TensorFlow's temporary files.
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f"{TEMPORARY}{os.path.basename(path)}-{os.getpid()}")
    try:
        archive.write_out(tmp, verbose=False)
        if not os.path.exists(path):
            os.replace(tmp, path)
        for name in os.listdir(tmp) if os.path.exists(tmp) else ():  # over an export written before
            target = os.path.join(path, name)  # (a file of the user's in the folder stays)
            if os.path.isdir(target):
                shutil.rmtree(target)
            os.replace(os.path.join(tmp, name), target)
    except (OSError, tf.errors.OpError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e).rsplit("; ", 1)[-1]
        raise RunError(f"cannot write the SavedModel to {path}: {why}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
