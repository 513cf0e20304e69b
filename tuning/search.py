"""Grid search with keras-tuner: each trial averaged over several rounds, resumable, distributed.

The objective is the mean validation compare accuracy, on pairs drawn from
MNIST training images that the training pairs do not use; the test split is
touched once, at the end, for the best configuration only.
"""
import itertools
import json
import math
import os
import statistics

import keras
import keras_tuner

from mnistcompare.errors import RunError
from mnistcompare.data import load_pairs
from mnistcompare.experiments import Progress
from mnistcompare.files import write_json, write_text
from mnistcompare.training import ModelCache, train_round
from mnistcompare.tuning import PROJECT
from mnistcompare.tuning.hypermodel import ComparisonHyperModel

OBJECTIVE = keras_tuner.Objective("val_compare_accuracy", "max")


class GridOracle(keras_tuner.Oracle):
    """Every point of a grid, each once, in the grid's order.

    The next trial is the first point no trial has taken yet (whatever its
    status), so a reloaded search continues where it stopped; a trial that a
    dead process left running is retried by keras-tuner itself on reload (its
    retry queue takes precedence over new points).
    """

    def set_state(self, state):
        # On reload. keras-tuner writes a trial's own file before this state, so a chief killed between the
        # two writes leaves the state behind: a finished trial still listed as running (it would be trained
        # again), or a new trial not listed at all (its point counts as taken and would never run). The
        # trial's own file is the later word.
        ongoing = {tuner: trial for tuner, trial in state["ongoing_trials"].items()
                   if self.trials[trial].status != "COMPLETED"}
        listed = set(ongoing.values()) | set(state["retry_queue"])
        unlisted = [t for t, trial in sorted(self.trials.items()) if trial.status == "RUNNING" and t not in listed]
        super().set_state({**state, "ongoing_trials": ongoing, "retry_queue": state["retry_queue"] + unlisted})

    def __init__(self, grid, **kwargs):
        space = keras_tuner.HyperParameters()
        for name, values in grid.items():
            space.Choice(name, values)
        super().__init__(objective=OBJECTIVE, hyperparameters=space, **kwargs)
        self.grid = grid

    def populate_space(self, trial_id):
        taken = {json.dumps(t.hyperparameters.values, sort_keys=True) for t in self.trials.values()}
        for point in itertools.product(*self.grid.values()):
            values = dict(zip(self.grid, point))
            if json.dumps(values, sort_keys=True) not in taken:
                return {"status": "RUNNING", "values": values}
        return {"status": "STOPPED"}


class ComparisonTuner(keras_tuner.Tuner):
    """Each trial: `runs` rounds (seed, seed+1, ...) of train -> validation accuracy; the tuner averages.

    A round that diverges scores 0 (and is marked so in trials.md): a grid over
    learning rates may hold points that diverge. Any other failure of a round
    ends the search (keras_tuner.errors.FatalError): a point is never dropped
    silently, and a rerun retries it.
    """

    def __init__(self, hypermodel, grid, runs=3, val_pairs=1000, source=None, progress=True, **kwargs):
        super().__init__(oracle=GridOracle(grid), hypermodel=hypermodel, **kwargs)
        self.runs, self.val_pairs, self.source = runs, val_pairs, source
        self.cache = ModelCache(size=1)  # the rounds of a trial share one traced model
        self.points = math.prod(len(values) for values in grid.values())
        self.progress = Progress(self.points, "grid points", enabled=progress)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.progress.enabled:  # (a worker's output goes to its log: no progress there)
            finished = self.oracle.get_best_trials(num_trials=self.points)  # a worker's oracle client has it too
            self.progress.update(sum(t.status == "COMPLETED" for t in finished))
            self.progress.stream.write("\n")

    def run_trial(self, trial, *args, callbacks=(), **kwargs):
        """The rounds of one grid point. Keras callbacks given to `search` apply to every round; a
        TensorBoard callback logs each round to LOG_DIR/trial_N/round-R and the trial's grid values and
        score to LOG_DIR/trial_N, for TensorBoard's HParams dashboard."""
        cfg = self.hypermodel.config(trial.hyperparameters)
        results = []
        for run in range(self.runs):
            run_cfg = cfg.replace(seed=cfg.seed + run)
            train, val = load_pairs(run_cfg, self.source, validation=self.val_pairs)
            try:
                _, metrics, _ = train_round(run_cfg, train, val, verbose=0, cache=self.cache,
                                            callbacks=[_for_round(c, trial, run) for c in callbacks])
                results.append({"val_compare_accuracy": metrics["test_accuracy"],
                                "train_seconds": metrics["train_seconds"],
                                # nets that read digits: what bounds the comparison
                                **({"val_digit_accuracy": metrics["test_digit_accuracy"]}
                                   if "test_digit_accuracy" in metrics else {})})
            except RunError as e:
                if "diverged" not in str(e):
                    raise
                results.append({"val_compare_accuracy": 0.0, "train_seconds": 0.0, "diverged": str(e)})
            except Exception as e:
                raise keras_tuner.errors.FatalError(
                    f"trial {trial.trial_id} ({trial.hyperparameters.values}) failed in round {run + 1}: "
                    f"{type(e).__name__}: {e}") from e
        # keras-tuner keeps only the mean; the rounds go beside the trial for trials.md.
        write_json(os.path.join(self.get_trial_dir(trial.trial_id), "rounds.json"),
                   {"config": cfg.to_dict(), "rounds": results, "tuner_id": self.tuner_id})
        score = statistics.mean(r["val_compare_accuracy"] for r in results)
        for callback in callbacks:
            if isinstance(callback, keras.callbacks.TensorBoard):
                write_hparams(os.path.join(callback.log_dir, f"trial_{trial.trial_id}"), trial, score)
        return [{"val_compare_accuracy": r["val_compare_accuracy"]} for r in results]


def _for_round(callback, trial, run):
    """A TensorBoard callback of its own for each round, in LOG_DIR/trial_N/round-R (as keras-tuner's own
    run_trial gives each trial one); other callbacks as they are."""
    if not isinstance(callback, keras.callbacks.TensorBoard):
        return callback
    return keras.callbacks.TensorBoard(os.path.join(callback.log_dir, f"trial_{trial.trial_id}", f"round-{run + 1}"),
                                       write_graph=False)


def write_hparams(log_dir, trial, score):
    """The trial's grid values and its score, as TensorBoard's HParams dashboard reads them."""
    import tensorflow as tf
    from tensorboard.plugins.hparams import api as hparams

    with tf.summary.create_file_writer(log_dir).as_default():
        hparams.hparams(trial.hyperparameters.values, trial_id=trial.trial_id)
        tf.summary.scalar("val_compare_accuracy", score, step=0)


def make_tuner(base, grid, out, runs, val_pairs, source=None, overwrite=False, progress=True):
    return ComparisonTuner(ComparisonHyperModel(base, grid), grid, runs=runs, val_pairs=val_pairs, source=source,
                           progress=progress, directory=out, project_name=PROJECT, overwrite=overwrite)


def trial_rows(tuner, grid):
    """Finished trials of this grid, best first: (trial, config dict, rounds)."""
    rows = []
    for trial in tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials)):
        path = os.path.join(tuner.get_trial_dir(trial.trial_id), "rounds.json")
        if trial.status != "COMPLETED" or not os.path.exists(path) or set(trial.hyperparameters.values) != set(grid):
            continue
        with open(path) as f:
            saved = json.load(f)
        rows.append((trial, saved["config"], saved["rounds"]))
    return rows


def trials_markdown(rows, grid):
    names = list(grid)
    # nets that read digits keep each round's digit accuracy too (trials saved before, or diverged: none)
    digits = any("val_digit_accuracy" in r for _, _, rounds in rows for r in rounds)
    lines = ["| rank | trial (keras-tuner's number, folder) | " + " | ".join(names) + " | validation accuracy |"
             + (" digit accuracy |" if digits else "") + " rounds |",
             "|---|---|" + "---|" * (len(names) + digits) + "---|---|"]
    for rank, (trial, _, rounds) in enumerate(rows, 1):
        accs = [r["val_compare_accuracy"] for r in rounds]
        spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else " ± –"  # one round: no spread
        values = " | ".join(str(trial.hyperparameters.values.get(n)) for n in names)
        diverged = sum("diverged" in r for r in rounds)
        note = f" ({diverged} diverged, scored 0)" if diverged else ""
        digit = [r["val_digit_accuracy"] for r in rounds if "val_digit_accuracy" in r]
        digit_cell = (f" {statistics.mean(digit):.4f} |" if digit else " |") if digits else ""
        lines.append(f"| {rank} | #{int(trial.trial_id) + 1} (trial_{trial.trial_id}) | {values} | "
                     f"{statistics.mean(accs):.4f}{spread}{note} "
                     f"|{digit_cell} {len(accs)} |")
    return "\n".join(lines) + "\n"


def write_outputs(tuner, grid, out):
    """trials.md and best_config.json from the finished trials of this grid; returns (best Config dict, rows)."""
    rows = trial_rows(tuner, grid)
    if not rows:
        raise RunError(f"no finished trial in {out}")
    write_text(os.path.join(out, "trials.md"), trials_markdown(rows, grid))
    best = rows[0][1]
    write_json(os.path.join(out, "best_config.json"), best)
    return best, rows
