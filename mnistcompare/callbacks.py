"""The package's Keras callbacks, each standing in for a Keras one where that one falls short (said on each):
`train_round` adds `Diverged` and `TestCurve`; `mnistcompare-train` adds `HistoryFile` and `Checkpoint`."""
import csv
import glob
import math
import os
import re
import sys
import time
import zipfile

from mnistcompare.runtime import quiet_tensorflow

quiet_tensorflow()  # TensorFlow loaded as the commands load it: quiet, with their kernels (runtime.py)

import keras
import numpy as np
import tensorflow as tf

from mnistcompare.errors import RunError, UserError
from mnistcompare.files import atomic_path

# A loss past this has exploded: no committed study's epoch loss passed 13.9 (docs/train.md, "A run that diverges").
LOSS_LIMIT = 1000.0


class Diverged(keras.callbacks.Callback):
    """Ends training with RunError as soon as the loss is not finite or above LOSS_LIMIT, before the other
    callbacks see the epoch (so nothing of it is saved). Stands in for keras.callbacks.TerminateOnNaN, which
    misses a loss that explodes but stays finite, and lets the epoch be saved."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not (math.isfinite(float(loss)) and float(loss) <= LOSS_LIMIT):
            raise RunError(f"training diverged at epoch {self.epoch + 1} (loss {float(loss):.4g}); nothing of that "
                           "epoch is saved: lower --lr, or check the data")


class TestCurve(keras.callbacks.Callback):
    """Adds `test_accuracy` and `test_compare_loss` (the one loss every architecture has) to each epoch's logs,
    timed apart from the fit. Stands in for `validation_data`, which would score every output under the
    validation names. `score(model)`: see training.test_scorer. Each of `log_dirs` gets a TensorBoard run
    `test` under the training run's names (epoch_compare_accuracy, epoch_compare_loss), so curves overlay."""

    def __init__(self, score, log_dirs=()):
        super().__init__()
        self.score, self.log_dirs, self.writers, self.seconds = score, log_dirs, [], 0.0

    def on_train_begin(self, logs=None):
        self.writers = [tf.summary.create_file_writer(os.path.join(d, "test")) for d in self.log_dirs]

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        result = self.score(self.model)
        logs.update(test_accuracy=result["accuracy"], test_compare_loss=result["compare_loss"])
        for writer in self.writers:
            with writer.as_default(step=epoch):
                tf.summary.scalar("epoch_compare_accuracy", result["accuracy"])
                tf.summary.scalar("epoch_compare_loss", result["compare_loss"])
        self.seconds += time.perf_counter() - start

    def on_train_end(self, logs=None):
        for writer in self.writers:
            writer.close()


class HistoryFile(keras.callbacks.Callback):
    """history.csv, rewritten atomically after every epoch; a resumed run first `load`s the rows of the epochs
    it resumes after (rows from that epoch on are dropped and redone). Stands in for keras.callbacks.CSVLogger,
    which appends in place: a run killed mid-write, or resumed, leaves a torn or repeated row."""

    def __init__(self, path):
        super().__init__()
        self.path, self.rows = path, []

    def load(self, epochs):
        """Keep the rows of the first `epochs` epochs of the file, which must hold them all."""
        try:
            with open(self.path, newline="") as f:
                rows = [{k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""}
                        for row in csv.DictReader(f, strict=True)]
            self.rows = [row for row in rows if row["epoch"] < epochs]
            if [row["epoch"] for row in self.rows] != list(range(epochs)):
                raise ValueError(f"not the rows of epochs 1 to {epochs}")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, csv.Error) as e:
            raise UserError(f"{self.path} is damaged ({type(e).__name__}); pass --overwrite to start the run "
                            "again") from None

    def on_epoch_end(self, epoch, logs=None):
        self.rows = [row for row in self.rows if row["epoch"] < epoch]
        self.rows.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, keys, restval="")
            writer.writeheader()
            writer.writerows(self.rows)


class Checkpoint(keras.callbacks.Callback):
    """The whole training state after every epoch, to resume an interrupted run exactly.

    Stands in for keras.callbacks.BackupAndRestore, whose `save_weights` file leaves out the dropout seed
    states (a resumed run ends with other numbers) and which writes weights and epoch as two files in place
    (a kill between them resumes at the wrong epoch). Every variable of the model and its optimizer goes to
    FOLDER/epoch-NNNN.npz, written beside and renamed; the two newest are kept. `restore` loads the newest
    whole one and returns its epochs. `write=False`: a multi-worker peer, which restores but never writes.
    """

    PATTERN = re.compile(r"epoch-(\d{4,})\.npz$")
    KEEP = 2

    def __init__(self, folder, write=True):
        super().__init__()
        self.folder, self.write, self._read = folder, write, None

    def set_model(self, model):
        super().set_model(model)
        variables = self.state_variables(model)  # read in one graph call: one by one, 10 ms an epoch
        self._read = tf.function(lambda: [v.value for v in variables], autograph=False)

    @staticmethod
    def state_variables(model):
        return list(model.variables) + list(model.optimizer.variables)

    def epoch_files(self):
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise UserError(f"cannot read the backups in {self.folder} ({e.strerror})") from None
        return sorted((int(m.group(1)), os.path.join(self.folder, name)) for name in names
                      if (m := self.PATTERN.fullmatch(name)))

    def restore(self, model):
        """Load the newest whole epoch file into `model`; the number of finished epochs (0: none)."""
        variables = self.state_variables(model)
        damaged = []
        for epochs, path in reversed(self.epoch_files()):
            try:
                with np.load(path) as data:
                    values = [data[f"v{i}"] for i in range(len(data.files))]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
                damaged.append(f"{os.path.basename(path)} ({type(e).__name__})")
                continue
            if len(values) != len(variables) or any(v.shape != tuple(x.shape) for v, x in zip(values, variables)):
                raise UserError(f"the backup {path} does not match this model; pass --overwrite to start again")
            for variable, value in zip(variables, values):
                variable.assign(value)
            if damaged:
                print(f"the backup {', '.join(damaged)} in {self.folder} is damaged: resuming from "
                      f"{os.path.basename(path)}, epoch {epochs}", file=sys.stderr, flush=True)
            return epochs
        if damaged:
            raise UserError(f"the backups in {self.folder} are damaged ({', '.join(damaged)}); pass --overwrite "
                            "to start again")
        return 0

    def clear(self):
        """Delete the epoch files (and the folder, if nothing else is in it)."""
        # with the temporary file of a write that a kill cut short
        for path in [p for _, p in self.epoch_files()] + glob.glob(os.path.join(self.folder, ".tmp-*.npz")):
            os.unlink(path)
        if os.path.isdir(self.folder) and not os.listdir(self.folder):
            os.rmdir(self.folder)

    def on_epoch_end(self, epoch, logs=None):
        if not self.write:  # a multi-worker peer
            return
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"epoch-{epoch + 1:04d}.npz")
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **{f"v{i}": value.numpy() for i, value in enumerate(self._read())})
            f.flush()
            os.fsync(f.fileno())
        for _, old in self.epoch_files()[:-self.KEEP]:
            os.unlink(old)
