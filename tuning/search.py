"""Grid search with keras-tuner: each trial averaged over several rounds, resumable, distributed.

The objective is the mean validation compare accuracy, on pairs drawn from
MNIST training images that the training pairs do not use; the test split is
touched once, at the end, for the best configuration only.
"""
import functools
import json
import os
import statistics

import keras_tuner
from keras_tuner.src.tuners.gridsearch import LinkedList

from mnistcompare.config import UserError, write_json, write_text
from mnistcompare.data import load_pairs
from mnistcompare.training import ModelCache, train_round
from tuning import PROJECT
from tuning.hypermodel import ComparisonHyperModel

OBJECTIVE = keras_tuner.Objective("val_compare_accuracy", "max")


class ResumableGridSearchOracle(keras_tuner.oracles.GridSearchOracle):
    """GridSearchOracle that continues a reloaded grid.

    keras-tuner 1.4 reloads finished trials but not its position in the grid,
    so a reloaded search stops after the trials it already has. Rebuild that
    position from the trials: all of them, in grid order, as the places to
    continue from.
    """

    def set_state(self, state):
        super().set_state(state)
        order = functools.cmp_to_key(
            lambda a, b: self._compare(self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values))
        ids = sorted(self.trials, key=order)
        self._ordered_ids = LinkedList()
        for trial_id in ids:
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(ids)


class ComparisonTuner(keras_tuner.Tuner):
    """Each trial: `runs` rounds (seed, seed+1, ...) of train -> validation accuracy; the tuner averages."""

    def __init__(self, hypermodel, runs=3, val_pairs=1000, data_dir=None, idx_dir=None, **kwargs):
        super().__init__(oracle=ResumableGridSearchOracle(objective=OBJECTIVE),
                         hypermodel=hypermodel, **kwargs)
        self.runs, self.val_pairs, self.data_dir, self.idx_dir = runs, val_pairs, data_dir, idx_dir
        self.cache = ModelCache(size=1)  # the rounds of a trial share one traced model

    def run_trial(self, trial, *args, **kwargs):
        cfg = self.hypermodel.config(trial.hyperparameters)
        results = []
        for run in range(self.runs):
            run_cfg = cfg.replace(seed=cfg.seed + run)
            train, val = load_pairs(run_cfg, self.data_dir, self.idx_dir, validation=self.val_pairs)
            _, metrics, _ = train_round(run_cfg, train, val, verbose=0, cache=self.cache)
            results.append({"val_compare_accuracy": metrics["test_accuracy"],
                            "train_seconds": metrics["train_seconds"]})
        # keras-tuner keeps only the mean; the rounds go beside the trial for trials.md.
        write_json(os.path.join(self.get_trial_dir(trial.trial_id), "rounds.json"),
                   {"config": cfg.to_dict(), "rounds": results, "tuner_id": self.tuner_id})
        return results


def make_tuner(base, grid, out, runs, val_pairs, data_dir=None, idx_dir=None, overwrite=False):
    return ComparisonTuner(ComparisonHyperModel(base, grid), runs=runs, val_pairs=val_pairs, data_dir=data_dir,
                           idx_dir=idx_dir, directory=out, project_name=PROJECT, overwrite=overwrite)


def trial_rows(tuner):
    """Finished trials, best first: (trial, config dict, list of validation accuracies)."""
    rows = []
    for trial in tuner.oracle.get_best_trials(num_trials=len(tuner.oracle.trials)):
        path = os.path.join(tuner.get_trial_dir(trial.trial_id), "rounds.json")
        if trial.status != "COMPLETED" or not os.path.exists(path):
            continue
        with open(path) as f:
            saved = json.load(f)
        rows.append((trial, saved["config"], [r["val_compare_accuracy"] for r in saved["rounds"]]))
    return rows


def trials_markdown(rows, grid):
    names = list(grid)
    lines = ["| rank | trial | " + " | ".join(names) + " | validation accuracy | rounds |",
             "|---|---|" + "---|" * len(names) + "---|---|"]
    for rank, (trial, _, accs) in enumerate(rows, 1):
        std = statistics.stdev(accs) if len(accs) > 1 else 0.0
        values = " | ".join(str(trial.hyperparameters.values.get(n)) for n in names)
        lines.append(f"| {rank} | {trial.trial_id} | {values} | {statistics.mean(accs):.4f} ± {std:.4f} "
                     f"| {len(accs)} |")
    return "\n".join(lines) + "\n"


def write_outputs(tuner, grid, out):
    """trials.md and best_config.json from the finished trials; returns the best Config dict."""
    rows = trial_rows(tuner)
    if not rows:
        raise UserError(f"no finished trial in {out}")
    write_text(os.path.join(out, "trials.md"), trials_markdown(rows, grid))
    best = rows[0][1]
    write_json(os.path.join(out, "best_config.json"), best)
    return best, rows
