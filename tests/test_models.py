import math
import subprocess
import sys

import keras
import numpy as np
import pytest

from mnistcompare.config import ARCHS, Config
from mnistcompare.reports import preset
from mnistcompare.data import to_dataset
from mnistcompare.layers import SHIFTS, ExactCompare, InferenceViews, ShiftViews, view_matrix, view_transforms
from mnistcompare.models import build_model, count_params
from mnistcompare.training import accuracy, compile_model, loss_weights, model_outputs as predict

from helpers import SMALL


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_builds_and_trains_a_step(arch, tiny_pairs):
    train, _ = tiny_pairs
    cfg = Config(arch=arch, **SMALL).validate()
    model = compile_model(build_model(cfg, 40.0, 50.0), cfg, steps_per_epoch=2)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(to_dataset(train, cfg.replace(batch_size=32, epochs=1), outputs=model.output_names),
                        epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))
    out = predict(model, train)
    assert out["compare"].shape == (len(train), 1)
    assert ((out["compare"] >= 0) & (out["compare"] <= 1)).all()
    assert ("digit_a" in out) == cfg.has_digits
    if cfg.has_digits:
        np.testing.assert_allclose(out["digit_a"].sum(1), 1, rtol=1e-5)


@pytest.mark.parametrize("combine", ["concat", "difference", "max"])
def test_combine_options(combine):
    model = build_model(Config(combine=combine, **SMALL).validate())
    width = 20 if combine == "concat" else 10
    assert model.get_layer(f"combine_{combine}").output.shape == (None, width)


def test_siamese_shares_one_tower():
    model = build_model(Config(arch="siamese", **SMALL).validate())
    towers = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert [t.name for t in towers] == ["tower"]
    tower_ids = {id(v) for v in towers[0].trainable_weights}
    head_ids = {id(v) for layer in model.layers if layer is not towers[0] for v in layer.trainable_weights}
    # Every trainable variable is either the one tower's or the compare head's: no copies.
    assert not tower_ids & head_ids
    assert {id(v) for v in model.trainable_weights} == tower_ids | head_ids
    assert len(model.trainable_weights) == len(tower_ids) + len(head_ids)


def test_two_tower_has_two_distinct_weight_sets():
    model = build_model(Config(arch="two_tower", **SMALL).validate())
    a, b = model.get_layer("tower_a"), model.get_layer("tower_b")
    assert len(a.trainable_weights) == len(b.trainable_weights) > 0
    assert not {id(v) for v in a.trainable_weights} & {id(v) for v in b.trainable_weights}
    siamese = build_model(Config(arch="siamese", **SMALL).validate())
    assert count_params(model) - count_params(siamese) == count_params(a)


def test_report000_presets_match_appendix_a():
    # PyTorch's counts: the reports' Linear(k, 2) output is built as two logits (output="softmax2").
    assert count_params(build_model(preset("report000-baseline"))) == 81239
    assert count_params(build_model(preset("report000-siamese"))) == 23833
    siamese = build_model(preset("report000-siamese"))
    tower = siamese.get_layer("tower")
    assert [tuple(tower.get_layer(f"conv{i}").output.shape[1:]) for i in range(3)] == [
        (12, 12, 16), (5, 5, 32), (1, 1, 64)]
    assert [layer.momentum for layer in siamese.layers + tower.layers
            if isinstance(layer, keras.layers.BatchNormalization)] == [0.9] * 4


def test_report003_auxiliary_model_reads_prediction_and_digits_from_the_joined_features():
    from mnistcompare.reports import study

    entry = next(e for e in study("report003-table1").entries() if e.name == "WeightSharingAuxiliaryModel")
    model = build_model(entry.config.validate())
    assert model.get_layer("tower").output.shape[-1] == 128  # each image's features, shared weights
    assert model.get_layer("head0_dense").input.shape[-1] == 256 and model.get_layer("head0_dense").units == 100
    for digit in ("digit_a_logits", "digit_b_logits"):
        layer = model.get_layer(digit)
        assert layer.input.shape[-1] == 100 and layer.units == 10
    conv = 9 * 32 + 32 + 9 * 32 * 64 + 64
    assert count_params(model) == conv + (64 * 2 * 2 * 128 + 128) + (256 * 100 + 100) + 2 * (100 * 10 + 10) + 101


def test_report004_nets_without_aux_end_in_its_two_linear_layers():
    from mnistcompare.reports import study

    nets = {e.name: build_model(e.config.validate()) for e in study("report004-table4").entries()}
    # Table II: 392 -> 200, BN, pool 2 -> 256, BN, pool 2 -> 10 -> 2 (linear), ReLU
    assert count_params(nets["Baseline"]) == (392 * 200 + 200 + 2 * 200) + (100 * 256 + 256 + 2 * 256) + (
        128 * 10 + 10) + (10 * 2 + 2)
    for name in ("Baseline", "CNN"):
        bottleneck = nets[name].get_layer("bottleneck")
        assert bottleneck.units == 10 and bottleneck.activation.__name__ == "linear"


@pytest.mark.parametrize("kernel,padding,pool,activation", [
    (3, "valid", 2, "relu"), (3, "same", 2, "leaky_relu"), (2, "same", 3, "gelu"), (5, "valid", 1, "tanh")])
def test_pooled_conv_equals_conv_activation_pool(kernel, padding, pool, activation):
    from mnistcompare.layers import PooledConv

    rng = np.random.default_rng(0)
    kernel_value, bias = rng.normal(size=(kernel, kernel, 1, 6)), rng.normal(size=6)
    fused = PooledConv(6, kernel, padding, pool, activation)
    conv = keras.layers.Conv2D(6, kernel, padding=padding, activation=activation)
    pooling = keras.layers.MaxPooling2D(pool) if pool > 1 else keras.layers.Identity()
    for layer in (fused, conv):
        layer.build((None, 14, 14, 1))
        layer.set_weights([kernel_value, bias])
    for batch in (1, 5, 64):  # padded inside to 1, 8 and 64 images
        x = rng.normal(size=(batch, 14, 14, 1)).astype(np.float32)
        expected = np.asarray(pooling(conv(x)))
        got = np.asarray(fused(x))
        assert got.shape == expected.shape == (batch, *fused.compute_output_shape((batch, 14, 14, 1))[1:])
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape,epsilon", [((40, 7, 7, 6), 1e-3), ((40, 6), 1e-5)])
def test_fused_batch_norm_trains_as_keras_batch_norm(shape, epsilon):
    """Outputs, gradients and moving statistics of Keras' BatchNormalization, up to float rounding."""
    import tensorflow as tf

    from mnistcompare.layers import FusedBatchNormalization

    rng = np.random.default_rng(0)
    keras_bn = keras.layers.BatchNormalization(momentum=0.9, epsilon=epsilon)
    fused = FusedBatchNormalization(momentum=0.9, epsilon=epsilon)
    keras_bn.build(shape)
    fused.build(shape)
    keras_bn.set_weights([rng.uniform(0.5, 2, shape[-1]), rng.normal(size=shape[-1]), np.zeros(shape[-1]),
                          np.ones(shape[-1])])  # gamma, beta, moving mean, moving variance
    fused.set_weights(keras_bn.get_weights())
    for _ in range(3):  # three training steps: the moving statistics follow the same batches
        x = tf.constant(rng.normal(2.0, 3.0, shape).astype(np.float32))
        results = []
        for layer in (keras_bn, fused):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * tf.sin(y))  # a loss whose gradient varies per element
            results.append([y, *tape.gradient(loss, [x, *layer.trainable_variables])])
        for expected, got in zip(*results):
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    for expected, got in zip(keras_bn.get_weights(), fused.get_weights()):  # gamma, beta, moving mean, variance
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused(x, training=False), keras_bn(x, training=False), rtol=1e-5, atol=1e-5)
    assert fused.get_config() == {**keras_bn.get_config(), "name": fused.name}


def test_exact_compare_matches_brute_force():
    rng = np.random.default_rng(0)
    p_a, p_b = rng.dirichlet(np.ones(10), 50).astype(np.float32), rng.dirichlet(np.ones(10), 50).astype(np.float32)
    brute = np.array([sum(p_a[n, i] * p_b[n, j] for i in range(10) for j in range(10) if i <= j) for n in range(50)])
    np.testing.assert_allclose(np.asarray(ExactCompare()([p_a, p_b]))[:, 0], brute, rtol=1e-5)
    one_hot = np.eye(10, dtype=np.float32)
    assert float(ExactCompare()([one_hot[[3]], one_hot[[3]]])[0, 0]) == pytest.approx(1.0)
    assert float(ExactCompare()([one_hot[[4]], one_hot[[3]]])[0, 0]) == pytest.approx(0.0)


@pytest.mark.parametrize("alpha", [1.0, 1 / 3, 0.2, 0.0])
def test_total_loss_is_the_alpha_weighted_sum(alpha, tiny_pairs):
    train, _ = tiny_pairs
    assert loss_weights(alpha) == {"compare": alpha, "digit_a": (1 - alpha) / 2, "digit_b": (1 - alpha) / 2}
    cfg = Config(alpha=alpha, **SMALL).validate()
    model = compile_model(build_model(cfg, 40.0, 50.0), cfg, 1)
    got = model.evaluate(train.features(), train.labels(), batch_size=len(train), verbose=0, return_dict=True)
    out = predict(model, train)
    bce = float(keras.losses.binary_crossentropy(train.target[:, None], out["compare"]).numpy().mean())
    ce_a = float(keras.losses.sparse_categorical_crossentropy(train.digit_a, out["digit_a"]).numpy().mean())
    ce_b = float(keras.losses.sparse_categorical_crossentropy(train.digit_b, out["digit_b"]).numpy().mean())
    assert got["loss"] == pytest.approx(alpha * bce + (1 - alpha) / 2 * (ce_a + ce_b), rel=1e-4)


def test_accuracy_counts_compare_and_digits(tiny_pairs):
    train, _ = tiny_pairs
    model = build_model(Config(**SMALL).validate(), 40.0, 50.0)
    out = predict(model, train)
    result = accuracy(model, train)
    assert result["accuracy"] == pytest.approx(np.mean((out["compare"][:, 0] > 0.5) == (train.target == 1)))
    assert 0 <= result["digit_accuracy"] <= 1


def _weights(model, kind):
    """(kernel, bias) of every Dense or Conv2D layer, nested towers included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _weights(layer, kind)
        elif isinstance(layer, kind):
            found.append(layer.get_weights())
    return found


def test_torch_numerics_initialisers_epsilons_and_slope():
    import math

    for numerics in ("torch", "keras"):
        cfg = Config(arch="siamese", numerics=numerics, activation="leaky_relu", conv_batch_norm=True,
                     output="softmax2", **SMALL).validate()
        model = compile_model(build_model(cfg), cfg, 1)
        layers = _weights(model, (keras.layers.Dense, keras.layers.Conv2D))
        assert len(layers) == 2 + 1 + 1 + 1 + 1  # conv0, conv1, hidden0, logits, head0, compare_logits
        for kernel, bias in layers:
            bound = 1 / math.sqrt(np.prod(kernel.shape[:-1]))  # fan_in: kernel height x width x input channels
            if numerics == "torch":  # PyTorch: uniform in +-1/sqrt(fan_in), kernel and bias alike
                assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
                assert np.abs(kernel).max() > 0.7 * bound and np.any(bias != 0)
            else:  # Keras: glorot_uniform, zero bias
                assert not bias.any()
        bns = [l for l in model.get_layer("tower").layers + model.layers if isinstance(l, keras.layers.BatchNormalization)]
        slopes = {l.negative_slope for l in model.get_layer("tower").layers if isinstance(l, keras.layers.LeakyReLU)}
        assert {bn.epsilon for bn in bns} == ({1e-5} if numerics == "torch" else {1e-3})
        assert slopes == ({0.01} if numerics == "torch" else {0.2})
        assert model.optimizer.epsilon == (1e-8 if numerics == "torch" else 1e-7)
    # One part alone changes only that part.
    cfg = Config(numerics="bn-eps", **SMALL, conv_batch_norm=True).validate()
    model = compile_model(build_model(cfg), cfg, 1)
    assert model.optimizer.epsilon == 1e-7 and not _weights(model, keras.layers.Dense)[0][1].any()
    assert {l.epsilon for l in model.get_layer("tower").layers if isinstance(l, keras.layers.BatchNormalization)} == {1e-5}


@pytest.mark.slow
def test_model_file_loads_in_safe_mode_in_a_fresh_process(tmp_path, tiny_pairs):
    train, _ = tiny_pairs
    for arch in ("siamese", "digits"):
        # Every custom layer and option that changes what is saved: torch numerics, two-logit output,
        # pooled dense units, probabilities into the head, LeakyReLU; batch-norm and an ensemble of two
        # members in the digits net.
        extra = dict(numerics="torch", output="relu-softmax2", dense_pool=2, hidden=(16,), head=(8,),
                     head_input="probs", activation="leaky_relu") if arch == "siamese" else \
            dict(conv_batch_norm=True, members=2)
        cfg = Config(arch=arch, **{**SMALL, **extra}).validate()
        model = compile_model(build_model(cfg, 40.0, 50.0), cfg, 1)
        path = tmp_path / f"{arch}.keras"
        model.save(path)
        np.save(tmp_path / f"{arch}.npy", predict(model, train)["compare"])
    np.save(tmp_path / "a.npy", train.image_a)
    np.save(tmp_path / "b.npy", train.image_b)
    code = f"""
import keras, numpy as np, mnistcompare.layers  # registers the layers, as Keras documents it
a, b = np.load(r"{tmp_path}/a.npy"), np.load(r"{tmp_path}/b.npy")
for arch in ("siamese", "digits"):
    m = keras.models.load_model(r"{tmp_path}/" + arch + ".keras", safe_mode=True)
    got = np.asarray(m({{"image_a": a, "image_b": b}}, training=False)["compare"])
    np.testing.assert_allclose(got, np.load(r"{tmp_path}/" + arch + ".npy"), rtol=1e-5, atol=1e-6)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


def test_digits_ensemble_averages_member_probabilities(tiny_pairs):
    train, _ = tiny_pairs
    cfg = Config(arch="digits", members=3, **SMALL).validate()
    model = build_model(cfg, 40.0, 50.0)
    towers = [model.get_layer(f"tower{k}") for k in range(3)]
    assert len({id(v) for t in towers for v in t.trainable_weights}) == 3 * len(towers[0].trainable_weights)
    out = predict(model, train)
    x = model.get_layer("standardize")(train.image_a)
    members = [keras.ops.softmax(t(x, training=False)) for t in towers]
    np.testing.assert_allclose(out["digit_a"], np.mean([np.asarray(m) for m in members], 0), rtol=1e-5, atol=1e-6)
    assert count_params(model) == 3 * count_params(towers[0])
    with pytest.raises(Exception, match="--members"):
        Config(arch="siamese", members=2).validate()


def _tensorflow_view(images, angle, scale, dy, dx):
    """`images` rotated, scaled and shifted by TensorFlow's own resampling op (the reference for view_matrix)."""
    import tensorflow as tf

    h, w = images.shape[1:3]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    c, s = math.cos(math.radians(angle)) / scale, math.sin(math.radians(angle)) / scale
    transform = [c, s, cx - c * (cx + dx) - s * (cy + dy), -s, c, cy + s * (cx + dx) - c * (cy + dy), 0.0, 0.0]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=[transform], output_shape=[h, w], interpolation="BILINEAR", fill_mode="CONSTANT",
        fill_value=0.0).numpy()


@pytest.mark.parametrize("view", [(0.0, 1.0, 1, 0), (0.0, 1.0, 0, -1), (8.0, 1.0, 0, 0), (-8.0, 1.0, 0, 0),
                                  (0.0, 1.08, 0, 0), (0.0, 0.92, 0, 0), (-20.0, 0.9, 1, -1)])
def test_view_matrix_resamples_as_tensorflow_does(view):
    images = np.random.default_rng(0).uniform(0, 255, (3, 14, 14, 1)).astype("float32")
    got = (images.reshape(3, 196) @ view_matrix(14, 14, *view)).reshape(images.shape)
    np.testing.assert_allclose(got, _tensorflow_view(images, *view), atol=2e-3)
    if view[:2] == (0.0, 1.0):  # a whole-pixel shift moves pixels exactly, the background filling in
        dy, dx = view[2:]
        padded = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)])
        np.testing.assert_array_equal(got, padded[:, 1 - dy:15 - dy, 1 - dx:15 - dx])


def test_test_views_are_the_shifts_then_rotations_then_scalings_and_only_at_inference():
    images = np.random.default_rng(1).uniform(0, 255, (2, 14, 14, 1)).astype("float32")
    assert view_transforms() == [(0.0, 1.0, dy, dx) for dy, dx in SHIFTS]
    views = view_transforms(8.0, 0.08)
    assert views[5:] == [(8.0, 1.0, 0, 0), (-8.0, 1.0, 0, 0), (0.0, 1.08, 0, 0), (0.0, 0.92, 0, 0)]
    got = np.asarray(InferenceViews(8.0, 0.08)(images, training=False))
    assert got.shape == (len(views) * 2, 14, 14, 1)
    for k, view in enumerate(views):  # view by view, each a block of the batch
        np.testing.assert_allclose(got[2 * k:2 * k + 2], _tensorflow_view(images, *view), atol=2e-3)
    np.testing.assert_array_equal(InferenceViews(8.0, 0.08)(images, training=True), images)
    # models saved with the shifts alone (ShiftViews, no rotate or zoom in their config) load as before
    np.testing.assert_array_equal(ShiftViews.from_config({"name": "tta_views"})(images), InferenceViews()(images))


def test_tta_averages_the_digit_probabilities_of_every_view_and_saves(tmp_path):
    images = np.random.default_rng(2).uniform(0, 255, (2, 4, 14, 14, 1)).astype("float32")
    cfg = Config(arch="digits", members=2, tta=True, tta_rotate=8.0, tta_zoom=0.08, **SMALL).validate()
    model = build_model(cfg, 40.0, 50.0)
    plain = build_model(cfg.without_views(), 40.0, 50.0)
    plain.set_weights(model.get_weights())
    inputs = {"image_a": images[0], "image_b": images[1]}
    got = {k: np.asarray(v) for k, v in model(inputs, training=False).items()}
    for side, x in (("a", images[0]), ("b", images[1])):
        probs = [plain({"image_a": _tensorflow_view(x, *v), "image_b": x}, training=False)["digit_a"]
                 for v in view_transforms(8.0, 0.08)]
        np.testing.assert_allclose(got[f"digit_{side}"], np.mean(probs, axis=0), atol=1e-4)
    np.testing.assert_allclose(got["compare"], ExactCompare()([got["digit_a"], got["digit_b"]]), atol=1e-6)
    model.save(tmp_path / "tta.keras")
    loaded = keras.models.load_model(tmp_path / "tta.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(inputs, training=False)["compare"], got["compare"], rtol=1e-6, atol=1e-7)
    assert model(inputs, training=True)["digit_a"].shape == (4, 10)  # training sees each image once
    # `--preset best --no-tta`: the same model, each image read once
    assert "tta_views" not in [layer.name for layer in build_model(cfg.replace(tta=False)).layers]
