"""One round: the epoch loop, the model cache, resuming, early stopping, strategies."""
import subprocess
import sys

import keras
import pytest

from helpers import SMALL
from mnistcompare.config import Config
from mnistcompare.errors import RunError, UserError
from mnistcompare.callbacks import Checkpoint
from mnistcompare.training import ModelCache, new_model, train_round


def test_cached_model_rounds_equal_fresh_rounds(tiny_pairs):
    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=2, batch_size=16, dropout=0.3, swap=True, shift=1).validate()
    cache = ModelCache()
    first, m0, _ = train_round(cfg, train, test, model=cache.get(cfg, train), verbose=0)
    second, m1, h1 = train_round(cfg.replace(seed=1), train, test, model=cache.get(cfg.replace(seed=1), train),
                                 verbose=0)
    assert second is first  # reused, not rebuilt
    _, fresh, h_fresh = train_round(cfg.replace(seed=1), train, test, verbose=0)
    assert h1["loss"] == pytest.approx(h_fresh["loss"], rel=1e-6)
    assert (m1["test_accuracy"], m1["train_accuracy"]) == (fresh["test_accuracy"], fresh["train_accuracy"])
    assert m0["seed"] == 0 and m1["seed"] == 1


def test_epoch_loop_runs_every_batch_and_logs_the_test_curve(tiny_pairs):
    train, test = tiny_pairs  # 64 pairs: 6 batches of 10, then one of 4
    cfg = Config(**SMALL, epochs=3, batch_size=10, swap=True, rotate=5.0).validate()
    model, metrics, history = train_round(cfg, train, test, verbose=0, curves=True)
    assert int(model.optimizer.iterations.numpy()) == 3 * 7
    assert len(history["loss"]) == len(history["test_accuracy"]) == metrics["epochs"] == 3
    assert history["test_accuracy"][-1] == metrics["test_accuracy"]  # the curve's last point is the final model
    assert {"compare_accuracy", "digit_a_accuracy", "compare_loss"} <= set(history)


def test_with_test_time_views_the_curve_reads_each_image_once_and_the_scores_read_the_views(tiny_pairs):
    from mnistcompare.models import build_model
    from mnistcompare.training import accuracy

    train, test = tiny_pairs
    cfg = Config(**SMALL, arch="digits", epochs=2, batch_size=10, tta=True, tta_rotate=8.0).validate()
    model, metrics, history = train_round(cfg, train, test, verbose=0, curves=True)
    twin = build_model(cfg.without_views())
    twin.set_weights(model.get_weights())
    assert history["test_accuracy"][-1] == accuracy(twin, test)["accuracy"]
    assert metrics["test_accuracy"] == accuracy(model, test)["accuracy"]


def test_early_stopping_on_validation_pairs_keeps_the_best_epoch(tiny_pairs):
    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=60, batch_size=16, val_split=0.25, patience=2).validate()
    _, metrics, history = train_round(cfg, train, test, verbose=0)
    assert len(history["loss"]) < 60 and metrics["train_pairs"] == 48
    assert metrics["val_accuracy"] == pytest.approx(max(history["val_compare_accuracy"]))


def test_progress_bar_shows_every_epoch(tiny_pairs, capsys):
    train, test = tiny_pairs
    train_round(Config(**SMALL, epochs=2, batch_size=32).validate(), train, test, verbose=2)
    out = capsys.readouterr().out
    assert "Epoch 1/2" in out and "Epoch 2/2" in out and "loss:" in out


@pytest.mark.slow
def test_mirrored_strategy_trains_through_the_same_loop_as_one_process():
    # A fresh process: logical devices must be configured before TensorFlow starts.
    code = r"""
import numpy as np, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from helpers import SMALL, fake_mnist
from mnistcompare.config import Config
from mnistcompare.data import make_pairs
from mnistcompare.training import train_round
rng = np.random.default_rng(0)
train, test = make_pairs(*fake_mnist(400, 1), 200, rng), make_pairs(*fake_mnist(100, 2), 50, rng)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
cfg = Config(**SMALL, epochs=3, batch_size=40, dropout=0.0, swap=True, shift=1).validate()
model, metrics, history = train_round(cfg, train, test, verbose=0, strategy=strategy)
_, alone, alone_history = train_round(cfg, train, test, verbose=0)
assert strategy.num_replicas_in_sync == 2
variable = model.trainable_weights[0].value
assert isinstance(variable, tf.distribute.DistributedValues), type(variable)  # one copy per replica
assert {v.device.split("/")[-1] for v in variable.values} == {"device:CPU:0", "device:CPU:1"}, variable.values
# The same batches in the same order, BatchNorm over the whole batch: one process's losses, to rounding.
np.testing.assert_allclose(history["loss"], alone_history["loss"], rtol=2e-3)
assert abs(metrics["test_accuracy"] - alone["test_accuracy"]) <= 0.02
print("ok", metrics["test_accuracy"], alone["test_accuracy"])
"""
    import os
    tests = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": tests})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("ok")




class _StopAfter(keras.callbacks.Callback):
    """Counts the epochs begun; interrupts training after `epochs` epochs, as Ctrl-C would (their
    backup already written)."""

    def __init__(self, epochs=None):
        super().__init__()
        self.stop_at, self.started = epochs, 0

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.stop_at:
            raise KeyboardInterrupt
        self.started += 1


@pytest.mark.slow
def test_a_resumed_round_trains_exactly_the_missing_epochs_and_ends_as_if_never_stopped(tiny_pairs, tmp_path):
    train, test = tiny_pairs  # 64 pairs at batch 16: 4 steps per epoch
    cfg = Config(**SMALL, epochs=5, batch_size=16, dropout=0.3, swap=True, shift=1).validate()
    _, whole, whole_history = train_round(cfg, train, test, verbose=0)

    with pytest.raises(KeyboardInterrupt):
        train_round(cfg, train, test, verbose=0, callbacks=[_StopAfter(2), Checkpoint(tmp_path)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch-0001.npz", "epoch-0002.npz"]  # the two newest
    counter = _StopAfter()
    model = new_model(cfg, train)
    done = Checkpoint(tmp_path).restore(model)
    model, resumed, history = train_round(cfg, train, test, model=model, initial_epoch=done, verbose=0,
                                          callbacks=[counter, Checkpoint(tmp_path)])
    assert resumed["resumed_at_epoch"] == 2 and counter.started == 3  # epochs 3, 4 and 5 only
    assert int(model.optimizer.iterations.numpy()) == 5 * 4  # restored at 8, then 12 more steps
    assert history["loss"] == pytest.approx(whole_history["loss"][2:], rel=1e-6)  # every state restored, seeds too
    assert (resumed["test_accuracy"], resumed["train_accuracy"]) == (whole["test_accuracy"], whole["train_accuracy"])


def test_a_backup_of_another_model_is_refused(tiny_pairs, tmp_path):
    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=1, batch_size=32).validate()
    train_round(cfg, train, test, verbose=0, callbacks=[Checkpoint(tmp_path)])
    with pytest.raises(UserError, match="does not match this model"):
        Checkpoint(tmp_path).restore(new_model(cfg.replace(hidden=(32,)), train))


def test_a_diverging_round_stops_with_one_clear_error(tiny_pairs):
    train, test = tiny_pairs
    with pytest.raises(RunError, match="diverged at epoch"):
        train_round(Config(**SMALL, epochs=3, batch_size=16, lr=1e9, batch_norm=False).validate(), train, test,
                    verbose=0)


def test_no_pairs_is_one_clear_error(tiny_pairs):
    train, test = tiny_pairs
    empty = train.split(len(train))[0]
    with pytest.raises(RunError, match="no training or test pairs"):
        train_round(Config(**SMALL, epochs=1).validate(), empty, test, verbose=0)


def test_any_keras_callback_a_user_passes_works(tiny_pairs, tmp_path):
    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=3, batch_size=16).validate()
    seen = []
    callbacks = [keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
                 keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(epoch)),
                 keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)]
    model, metrics, history = train_round(cfg, train, test, verbose=0, callbacks=callbacks, curves=True)
    assert seen == [0, 1, 2] and metrics["epochs"] == 3
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 4 and "test_accuracy" in rows[0]  # the test curve reaches the user's callbacks too
    assert float(model.optimizer.learning_rate) == pytest.approx(cfg.lr / 8)


def test_a_cached_model_keeps_its_traced_train_function_for_its_next_round(tiny_pairs):
    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=1, batch_size=32).validate()
    cache = ModelCache()
    model = cache.get(cfg, train)
    train_round(cfg, train, test, model=model, verbose=0)
    traced = model.train_function
    again = cache.get(cfg.replace(seed=1), train)
    train_round(cfg.replace(seed=1), train, test, model=again, verbose=0)
    assert again is model and again.train_function is traced, \
        f"Keras {keras.__version__} traced a model's train function again for its next fit: ModelCache " \
        "(training.py) no longer spares the tracing; its rounds stay correct, only slower"
