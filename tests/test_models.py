import subprocess
import sys

import keras
import numpy as np
import pytest

from mnistcompare.config import ARCHS, Config, preset
from mnistcompare.data import to_dataset
from mnistcompare.layers import ExactCompare
from mnistcompare.models import build_model, count_params
from mnistcompare.training import accuracy, compile_model, loss_weights, predict

SMALL = dict(channels=(4, 8), kernel=(3,), pool=(2, 1), hidden=(16,), head=(8,))


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_builds_and_trains_a_step(arch, tiny_pairs):
    train, _ = tiny_pairs
    cfg = Config(arch=arch, **SMALL).validate()
    model = compile_model(build_model(cfg, 40.0, 50.0), cfg, steps_per_epoch=2)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(to_dataset(train, 32, shuffle_seed=0, digits=cfg.has_digits), epochs=1, verbose=0,
                        shuffle=False)
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
    # PyTorch counts 81,239 and 23,833 parameters; the 2-way softmax output
    # Linear(k, 2) becomes one sigmoid unit Linear(k, 1): k+1 fewer.
    assert count_params(build_model(preset("report000-baseline"))) == 81239 - 26
    assert count_params(build_model(preset("report000-siamese"))) == 23833 - 11
    siamese = build_model(preset("report000-siamese"))
    tower = siamese.get_layer("tower")
    assert [tuple(tower.get_layer(f"conv{i}").output.shape[1:]) for i in range(3)] == [
        (12, 12, 16), (5, 5, 32), (1, 1, 64)]
    assert [layer.momentum for layer in siamese.layers + tower.layers
            if isinstance(layer, keras.layers.BatchNormalization)] == [0.9] * 4


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


def test_model_file_loads_in_safe_mode_in_a_fresh_process(tmp_path, tiny_pairs):
    train, _ = tiny_pairs
    for arch in ("siamese", "digits"):
        model = build_model(Config(arch=arch, **SMALL).validate(), 40.0, 50.0)
        path = tmp_path / f"{arch}.keras"
        model.save(path)
        np.save(tmp_path / f"{arch}.npy", predict(model, train)["compare"])
    np.save(tmp_path / "a.npy", train.image_a)
    np.save(tmp_path / "b.npy", train.image_b)
    code = f"""
import keras, numpy as np, mnistcompare.layers
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


def test_cached_model_rounds_equal_fresh_rounds(tiny_pairs):
    from mnistcompare.training import ModelCache, train_round

    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=2, batch_size=16, dropout=0.3, swap=True, shift=1).validate()
    cache = ModelCache()
    first, m0, _ = train_round(cfg, train, test, verbose=0, cache=cache)
    second, m1, h1 = train_round(cfg.replace(seed=1), train, test, verbose=0, cache=cache)
    assert second is first  # reused, not rebuilt
    _, fresh, h_fresh = train_round(cfg.replace(seed=1), train, test, verbose=0)
    assert h1["loss"] == pytest.approx(h_fresh["loss"], rel=1e-6)
    assert (m1["test_accuracy"], m1["train_accuracy"]) == (fresh["test_accuracy"], fresh["train_accuracy"])
    assert m0["seed"] == 0 and m1["seed"] == 1


def test_epoch_loop_runs_every_batch_and_logs_the_test_curve(tiny_pairs):
    from mnistcompare.training import train_round

    train, test = tiny_pairs  # 64 pairs: 6 batches of 10, then one of 4
    cfg = Config(**SMALL, epochs=3, batch_size=10, swap=True, rotate=5.0).validate()
    model, metrics, history = train_round(cfg, train, test, verbose=0, curves=True)
    assert int(model.optimizer.iterations.numpy()) == 3 * 7
    assert len(history["loss"]) == len(history["test_accuracy"]) == metrics["epochs"] == 3
    assert history["test_accuracy"][-1] == metrics["test_accuracy"]  # the curve's last point is the final model
    assert {"compare_accuracy", "digit_a_accuracy", "compare_loss"} <= set(history)


def test_early_stopping_on_validation_pairs_keeps_the_best_epoch(tiny_pairs):
    from mnistcompare.training import train_round

    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=60, batch_size=16, val_split=0.25, patience=2).validate()
    _, metrics, history = train_round(cfg, train, test, verbose=0)
    assert len(history["loss"]) < 60 and metrics["train_pairs"] == 48
    assert metrics["val_accuracy"] == pytest.approx(max(history["val_compare_accuracy"]))


def test_progress_bar_shows_every_epoch(tiny_pairs, capsys):
    from mnistcompare.training import train_round

    train, test = tiny_pairs
    train_round(Config(**SMALL, epochs=2, batch_size=32).validate(), train, test, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss:" in out


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    # A fresh process: logical devices must be configured before TensorFlow starts.
    code = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import sys; sys.path.insert(0, sys.argv[1])
from conftest import fake_mnist
from mnistcompare.config import Config
from mnistcompare.data import make_pairs
from mnistcompare.training import train_round
rng = np.random.default_rng(0)
train, test = make_pairs(*fake_mnist(400, 1), 200, rng), make_pairs(*fake_mnist(100, 2), 50, rng)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
cfg = Config(channels=(4, 8), kernel=(3,), pool=(2, 1), hidden=(16,), head=(8,), epochs=3, batch_size=40).validate()
model, metrics, history = train_round(cfg, train, test, verbose=0, strategy=strategy)
assert strategy.num_replicas_in_sync == 2
variable = model.trainable_weights[0].value
assert isinstance(variable, tf.distribute.DistributedValues), type(variable)  # one copy per replica
assert {v.device.split("/")[-1] for v in variable.values} == {"device:CPU:0", "device:CPU:1"}, variable.values
assert len(history["loss"]) == 3 and np.isfinite(history["loss"]).all()
assert history["loss"][-1] < history["loss"][0]
print("ok", metrics["test_accuracy"])
"""
    import os
    tests = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, "-c", code, tests], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")


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
