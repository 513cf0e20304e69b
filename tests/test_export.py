"""The SavedModel contract, checked by programs of plain TensorFlow that never import mnistcompare."""
import pathlib
import sys

import numpy as np
import pytest

from mnistcompare.config import ARCHS, Config
from mnistcompare.models import build_model
from mnistcompare.training import model_outputs as predict

from helpers import SMALL, fake_mnist, xla_functions

CHECK = r"""
import sys, numpy as np, tensorflow as tf
folder, arch = sys.argv[1], sys.argv[2]
m = tf.saved_model.load(folder + "/saved_model")
raw_a, raw_b = np.load(folder + "/raw_a.npy"), np.load(folder + "/raw_b.npy")
pool = lambda x: x.astype(np.float32).reshape(-1, 14, 2, 14, 2).mean(axis=(2, 4))[..., None]
out = m.serve(tf.constant(pool(raw_a)), tf.constant(pool(raw_b)))
sig = m.signatures["serving_default"](image_a=tf.constant(pool(raw_a)), image_b=tf.constant(pool(raw_b)))
mnist = m.serve_mnist(tf.constant(raw_a), tf.constant(raw_b))
expected = np.load(folder + "/expected.npy")
assert out["compare"].shape == (len(raw_a),), out["compare"].shape
for got in (out, sig, mnist):
    np.testing.assert_allclose(got["compare"].numpy(), expected, rtol=1e-4, atol=1e-5)
keys = sorted(out)
assert keys == sorted(mnist) == sorted(sig), (keys, sorted(mnist), sorted(sig))
if keys != ["compare"]:
    assert keys == ["compare", "digit_a", "digit_b"] and out["digit_a"].shape == (len(raw_a), 10)
for bad in ([tf.zeros([2, 28, 28, 1]), tf.zeros([2, 14, 14, 1])], [tf.zeros([2, 14, 14, 1], tf.int32)] * 2):
    try:
        m.serve(*bad)
    except (TypeError, ValueError) as e:
        pass
    else:
        raise AssertionError("wrong input accepted")
if not sys.argv[3:]:  # a portable export: TF Serving's way of loading it, the TF1 session loader, answers the same
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], folder + "/saved_model")
        for key, (a, b) in (("serving_default", (pool(raw_a), pool(raw_b))), ("serve_mnist", (raw_a, raw_b))):
            sig = meta.signature_def[key]
            got = session.run({k: v.name for k, v in sig.outputs.items()},
                              {sig.inputs["image_a"].name: a, sig.inputs["image_b"].name: b})
            assert sorted(got) == keys, (key, sorted(got))
            np.testing.assert_allclose(got["compare"], expected, rtol=1e-4, atol=1e-5)
print("ok", " ".join(keys))
"""


@pytest.mark.slow
@pytest.mark.parametrize("arch,xla", [("siamese", False), ("siamese", True), ("baseline", False)])
def test_saved_model_round_trip_without_mnistcompare(arch, xla, tmp_path, plain_tf):
    """The default export: no function that only XLA runs (a stock TF Serving runs none), the same answers through
    tf.saved_model.load and through the TF1 session loader TF Serving uses; xla=True: its XLA kernel."""
    from mnistcompare.data import Pairs, pool
    from mnistcompare.export import export_saved_model

    images, labels = fake_mnist(40, 0)
    raw_a, raw_b = images[:20], images[20:]
    cfg = Config(arch=arch, **SMALL).validate()
    model = build_model(cfg, 40.0, 50.0)
    expected = predict(model, Pairs(pool(raw_a), pool(raw_b), labels[:20], labels[20:]))["compare"][:, 0]
    export_saved_model(model, cfg, str(tmp_path / "saved_model"), **({"xla": True} if xla else {}))
    assert bool(xla_functions(tmp_path / "saved_model")) == xla
    np.save(tmp_path / "raw_a.npy", raw_a)
    np.save(tmp_path / "raw_b.npy", raw_b)
    np.save(tmp_path / "expected.npy", expected)
    result = plain_tf(CHECK, tmp_path, arch, *(["xla"] if xla else []))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok compare")
    assert ("digit_a" in result.stdout) == (arch == "siamese")


@pytest.mark.parametrize("arch,members,xla,head_input", [(arch, 1, True, "logits") for arch in ARCHS] + [
    ("digits", 2, True, "logits"), ("siamese", 1, False, "logits"), ("siamese", 1, True, "features")])
def test_serving_layout_gives_the_same_outputs(arch, members, xla, head_input, tiny_pairs):
    from mnistcompare.export import serving_model
    from mnistcompare.layers import PooledConv

    train, _ = tiny_pairs
    cfg = Config(arch=arch, members=members, conv_batch_norm=True, head_input=head_input, **SMALL).validate()
    model = build_model(cfg, 40.0, 50.0)
    rng = np.random.default_rng(0)  # every weight away from its initial value, BatchNorm statistics included
    model.set_weights([np.asarray(w * rng.uniform(0.5, 1.5, w.shape) + rng.uniform(-0.2, 0.2, w.shape), np.float32)
                       for w in model.get_weights()])
    twin = serving_model(model, cfg, xla)
    names = [layer.name for layer in twin.layers]
    assert "stack_pair" not in names
    towers = [layer for layer in twin.layers if layer.name.startswith("tower")]
    assert len(towers) == {"siamese": 1, "siamese_mlp": 1, "two_tower": 2, "digits": members}.get(arch, 0)
    if cfg.has_conv:
        assert all(isinstance(tower.get_layer("conv0"), PooledConv) == xla for tower in towers)
    expected, got = predict(model, train), predict(twin, train)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-4, atol=1e-6)


DEPLOY = r"""
import sys, numpy as np, tensorflow as tf, keras
folder = sys.argv[1]
data = np.load(folder + "/pairs.npz")
a, b = data["a"], data["b"]
loaded = tf.saved_model.load(folder + "/saved_model")  # keep it: it owns the variables
served = loaded.serve(a, b)
layer = keras.layers.TFSMLayer(folder + "/saved_model", call_endpoint="serve")
from_dict = layer({"image_a": a, "image_b": b})
converter = tf.lite.TFLiteConverter.from_saved_model(folder + "/saved_model", signature_keys=["serving_default"])
converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # built-in ops only
interpreter = tf.lite.Interpreter(model_content=converter.convert())
lite = interpreter.get_signature_runner("serving_default")(image_a=a, image_b=b)
for name in served:
    np.testing.assert_allclose(np.asarray(from_dict[name]), served[name].numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(lite[name], served[name].numpy(), atol=1e-5, rtol=0)
print("ok", sorted(served))
"""


@pytest.mark.slow
def test_default_export_deploys_to_tflite_tfsmlayer_and_saved_model_cli(trained_run, tmp_path, plain_tf):
    out, _, test = trained_run
    (tmp_path / "saved_model").symlink_to(out / "saved_model" / "1")
    np.savez(tmp_path / "pairs.npz", a=test.image_a, b=test.image_b)  # 1000 test pairs
    result = plain_tf(DEPLOY, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok ['compare', 'digit_a', 'digit_b']"
    script = pathlib.Path(sys.executable).parent / "saved_model_cli"  # TensorFlow's command, as installed
    cli = plain_tf(script.read_text(), "show", "--all", "--dir", out / "saved_model" / "1")
    assert cli.returncode == 0, cli.stderr[-3000:]
    for endpoint in ("signature_def['serve']", "signature_def['serve_mnist']", "signature_def['serving_default']"):
        assert endpoint in cli.stdout


@pytest.mark.slow
def test_an_ensemble_with_test_time_views_deploys_to_tflite(tiny_pairs, tmp_path, plain_tf):
    """`best`'s export: several members (each tower's first conv its own XLA function: TFLite's converter
    mixed up one function shared by the members, their outputs off by 0.1) and rotated and scaled views."""
    from mnistcompare.export import export_saved_model

    train, _ = tiny_pairs
    cfg = Config(arch="digits", members=2, conv_batch_norm=True, tta=True, tta_rotate=8.0, tta_zoom=0.08,
                 **SMALL).validate()
    model = build_model(cfg, 40.0, 50.0)
    rng = np.random.default_rng(0)  # the members' weights apart, BatchNorm statistics included
    model.set_weights([np.asarray(w * rng.uniform(0.5, 1.5, w.shape) + rng.uniform(-0.2, 0.2, w.shape), np.float32)
                       for w in model.get_weights()])
    export_saved_model(model, cfg, str(tmp_path / "saved_model"))
    np.savez(tmp_path / "pairs.npz", a=train.image_a, b=train.image_b)
    result = plain_tf(DEPLOY, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok ['compare', 'digit_a', 'digit_b']"


@pytest.mark.slow
def test_wrong_inputs_to_the_saved_model_are_refused_clearly(tmp_path, plain_tf):
    from mnistcompare.export import export_saved_model

    cfg = Config(**SMALL).validate()
    export_saved_model(build_model(cfg, 40.0, 50.0), cfg, str(tmp_path / "saved_model"))
    code = r"""
import sys, numpy as np, tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
for call, message in ((lambda: m.serve(np.zeros((3, 14, 14, 1), np.float32), np.zeros((4, 14, 14, 1), np.float32)),
                       "same number of images"),
                      (lambda: m.serve_mnist(np.full((2, 28, 28), 300, np.int32), np.zeros((2, 28, 28), np.int32)),
                       "raw MNIST pixels are 0..255")):
    try:
        call()
    except tf.errors.InvalidArgumentError as e:
        assert message in str(e), str(e)
    else:
        raise AssertionError("accepted")
out = m.serve_mnist(np.full((2, 28, 28), 255, np.int32), np.zeros((2, 28, 28), np.int32))  # int32 in range: fine
assert out["compare"].shape == (2,)
for bad in (np.nan, np.inf, -1e9, 256.0):  # D11: every endpoint refuses pixels that are no pixels
    x = np.zeros((2, 14, 14, 1), np.float32)
    x[1, 3, 3, 0] = bad
    for call in (lambda: m.serve(x, np.zeros_like(x)),
                 lambda: m.signatures["serving_default"](image_a=tf.constant(np.zeros_like(x)), image_b=tf.constant(x))):
        try:
            call()
        except tf.errors.InvalidArgumentError as e:
            assert "pixels must be finite numbers in 0..255" in str(e), str(e)
        else:
            raise AssertionError(f"accepted {bad}")
z, raw = np.zeros((0, 14, 14, 1), np.float32), np.zeros((0, 28, 28), np.uint8)  # D11: a batch of no pairs
for out in (m.serve(z, z), m.serve_mnist(raw, raw), m.signatures["serving_default"](image_a=z, image_b=z)):
    assert {k: tuple(v.shape) for k, v in out.items()} == {"compare": (0,), "digit_a": (0, 10), "digit_b": (0, 10)}
print("ok")
"""
    result = plain_tf(code, tmp_path / "saved_model")
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]
