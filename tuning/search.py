"""The tuners of mnistcompare-tune: keras-tuner's Tuner with its four oracles, resumable after a kill.
A trial's objective is its rounds' mean validation accuracy, on pairs of held-out MNIST training images."""
import functools
import json
import os
import statistics
import sys

from mnistcompare.runtime import quiet_tensorflow

quiet_tensorflow()  # TensorFlow loaded as the commands load it: quiet, with their kernels (runtime.py)

import keras_tuner

from mnistcompare.config import MAX_SEED, Config
from mnistcompare.errors import RunError, UserError
from mnistcompare.progress import Progress
from mnistcompare.files import write_json, write_text
from . import PROJECT, SEARCH_FILE, check_bayesian
from .grid import points
from .hypermodel import OBJECTIVE, ComparisonHyperModel, declare


class Resumable:
    """An oracle that reloads the state a killed chief left, trial files first: keras-tuner writes a trial's
    file before the oracle's state, so a kill between them leaves a finished trial listed as running, or a
    new one unlisted (never run, yet counted). The trial's file is the later word."""

    def save(self):
        # keras-tuner writes its files in place: a kill during a write lost the search. Written beside and renamed.
        write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        write_text(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), json.dumps(trial.get_state()))

    def set_state(self, state):
        ongoing = {tuner: trial for tuner, trial in state["ongoing_trials"].items()
                   if self.trials[trial].status != "COMPLETED"}
        # A finished trial whose rounds.json is missing or damaged is trained again (keras-tuner's retry queue).
        lost = [t for t, trial in sorted(self.trials.items())
                if trial.status == "COMPLETED" and rounds_of(self._get_trial_dir(t)) is None]
        for trial_id in lost:
            print(f"trial {trial_id}: its rounds.json is missing or damaged; training it again", file=sys.stderr,
                  flush=True)
            self.trials[trial_id].status = "RUNNING"
        listed = set(ongoing.values()) | set(state["retry_queue"])
        unlisted = [t for t, trial in sorted(self.trials.items()) if trial.status == "RUNNING" and t not in listed]
        started = [t for t in sorted(self.trials) if t not in state["start_order"]]
        hashes = {t: self._compute_values_hash(self.trials[t].hyperparameters.values) for t in started}
        super().set_state({**state, "ongoing_trials": ongoing, "retry_queue": state["retry_queue"] + unlisted,
                           "start_order": state["start_order"] + started,
                           "tried_so_far": list(dict.fromkeys(state["tried_so_far"] + list(hashes.values()))),
                           "id_to_hash": {**state["id_to_hash"], **hashes}})


class GridOracle(Resumable, keras_tuner.oracles.GridSearchOracle):
    """keras-tuner's grid, resumable: its order of the points tried and its queue of points to continue
    from are not in its saved state (keras-tuner#1055: a reloaded GridSearch fails with KeyError), so
    they are rebuilt from the trials on reload."""

    def set_state(self, state):
        super().set_state(state)
        order = sorted(self.trials, key=functools.cmp_to_key(
            lambda a, b: self._compare(self.trials[a].hyperparameters.values, self.trials[b].hyperparameters.values)))
        self._ordered_ids = type(self._ordered_ids)()  # the oracle's own list type, empty
        for trial_id in order:
            self._ordered_ids.insert(trial_id)
        self._populate_next = list(order)


class RandomOracle(Resumable, keras_tuner.oracles.RandomSearchOracle):
    pass


class BayesianOracle(Resumable, keras_tuner.oracles.BayesianOptimizationOracle):
    pass


class HyperbandOracle(Resumable, keras_tuner.oracles.HyperbandOracle):
    pass


class ComparisonTuner(keras_tuner.Tuner):
    """keras-tuner's Tuner, which keeps each trial's rounds beside it (rounds.json, for trials.md) and
    shows the trials done. A round that fails other than by diverging ends the search
    (keras_tuner.errors.FatalError): a point is never dropped silently, and a rerun retries it."""

    def __init__(self, *args, total=None, progress=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.progress = Progress(total or 0, "trials", enabled=progress)

    def run_trial(self, trial, *args, **kwargs):
        try:
            results = super().run_trial(trial, *args, **kwargs)
        except keras_tuner.errors.FatalError:
            raise
        except (RunError, OSError) as e:  # a file the trial could not write (a full disk, say): as the file says
            raise keras_tuner.errors.FatalError(f"trial {trial.trial_id}: {e}") from e
        except Exception as e:
            raise keras_tuner.errors.FatalError(
                f"trial {trial.trial_id} ({trial.hyperparameters.values}) failed in round "
                f"{len(self.hypermodel.rounds) + 1}: {type(e).__name__}: {e}") from e
        # keras-tuner keeps only the mean; the rounds go beside the trial for trials.md.
        write_json(os.path.join(self.get_trial_dir(trial.trial_id), "rounds.json"),
                   {"config": self.hypermodel.trained.to_dict(), "rounds": self.hypermodel.rounds,
                    "tuner_id": self.tuner_id})
        return results

    def save(self):
        # keras-tuner's own, with its tuner file written beside and renamed (see Resumable.save)
        if not self._is_worker():
            self.oracle.save()
        write_text(self._get_tuner_fname(), json.dumps(self.get_state()))

    def on_search_begin(self):
        # keras-tuner reloads a project only where its tuner file exists, first written after the first trial:
        # a kill in between trained that trial twice. Written now.
        super().on_search_begin()
        self.save()

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        if self.progress.enabled:  # (a worker's output goes to its log: no progress there)
            self.progress.update(sum(t.status == "COMPLETED" for t in self.oracle.trials.values()))
            self.progress.stream.write("\n")


def make_oracle(kind, space, seed=None, max_trials=None, max_epochs=None):
    """keras-tuner's oracle of `kind` (grid, random, bayesian, hyperband) over `space`."""
    hps = keras_tuner.HyperParameters()
    for name, axis in space.items():
        declare(hps, name, axis)
    # keras-tuner takes a seed of 0 for none (`seed or random.randint(1, 10000)`; seen in keras-tuner#421): a
    # search from --seed 0, the default, sampled other points each run. It samples as from the largest seed.
    common = dict(objective=OBJECTIVE, hyperparameters=hps, seed=MAX_SEED if seed == 0 else seed)
    if kind == "grid":
        return GridOracle(**common)
    if kind == "hyperband":
        return HyperbandOracle(max_epochs=max_epochs, factor=3, **common)
    if kind == "bayesian":
        check_bayesian()
    return {"random": RandomOracle, "bayesian": BayesianOracle}[kind](max_trials=max_trials, **common)


def make_tuner(base, space, out, runs, val_pairs, source=None, kind="grid", max_trials=None, overwrite=False,
               progress=True):
    """The tuner of a search over `space` around Config `base`, in out/keras_tuner."""
    hypermodel = ComparisonHyperModel(base, space, runs=runs, val_pairs=val_pairs, source=source)
    oracle = make_oracle(kind, space, seed=base.seed, max_trials=max_trials, max_epochs=base.epochs)
    total = points(space) if kind == "grid" else max_trials if kind in ("random", "bayesian") else None
    return ComparisonTuner(oracle=oracle, hypermodel=hypermodel, directory=out, project_name=PROJECT,
                           overwrite=overwrite, total=total, progress=progress)


def load_tuner(out, source=None):
    """The tuner of the search that mnistcompare-tune ran in `out`, for keras-tuner's reading API:
    `get_best_hyperparameters`, `results_summary`, `get_best_models` (each trial's best round)."""
    with open(os.path.join(out, SEARCH_FILE)) as f:
        search = json.load(f)
    return make_tuner(Config.from_dict(search["base"]), search["grid"], out, search["runs_per_trial"],
                      search["val_pairs"], source, kind=search.get("tuner", "grid"),
                      max_trials=search.get("max_trials"), progress=False)


def rounds_of(trial_dir):
    """What a finished trial's rounds.json holds ({"config", "rounds", ...}), checked; None if it is missing
    or damaged (the trial is then trained again: see Resumable.set_state)."""
    try:
        with open(os.path.join(trial_dir, "rounds.json")) as f:
            saved = json.load(f)
        if not saved["rounds"] or not all(isinstance(r, dict) and isinstance(r.get(OBJECTIVE.name), (int, float))
                                          for r in saved["rounds"]):
            raise ValueError("rounds without a score")
        Config.from_dict(saved["config"])
        return saved
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, UserError):
        return None


def trial_rows(tuner, grid):
    """Finished trials of this space, best first, ties broken by the earlier trial: (trial, config dict, rounds).
    (keras-tuner's own order of tied trials follows the order its files were listed in.)"""
    rows = []
    for trial in tuner.oracle.trials.values():
        if trial.status != "COMPLETED" or not set(grid) <= set(trial.hyperparameters.values):
            continue
        saved = rounds_of(tuner.get_trial_dir(trial.trial_id))
        if saved is None:
            raise RunError(f"trial {trial.trial_id}'s rounds.json went missing or was damaged during the search; "
                           "rerun the same command to train that trial again")
        rows.append((trial, saved["config"], saved["rounds"]))
    return sorted(rows, key=lambda row: (-statistics.mean(r[OBJECTIVE.name] for r in row[2]), int(row[0].trial_id)))


def trials_markdown(rows, grid):
    names = list(grid)
    if any("tuner/epochs" in trial.hyperparameters.values for trial, _, _ in rows):
        names.append("tuner/epochs")  # Hyperband's budget
    # nets that read digits keep each round's digit accuracy too (trials saved before, or diverged: none)
    digits = any("val_digit_accuracy" in r for _, _, rounds in rows for r in rounds)
    lines = ["| rank | trial (keras-tuner's number, folder) | " + " | ".join(names) + " | validation accuracy |"
             + (" digit accuracy |" if digits else "") + " rounds |",
             "|---|---|" + "---|" * (len(names) + digits) + "---|---|"]
    for rank, (trial, _, rounds) in enumerate(rows, 1):
        accs = [r["val_compare_accuracy"] for r in rounds]
        spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else " ± –"  # one round: no spread
        values = " | ".join(_short(trial.hyperparameters.values.get(n)) for n in names)
        diverged = sum("diverged" in r for r in rounds)
        note = f" ({diverged} diverged, scored 0)" if diverged else ""
        digit = [r["val_digit_accuracy"] for r in rounds if "val_digit_accuracy" in r]
        digit_cell = (f" {statistics.mean(digit):.4f} |" if digit else " |") if digits else ""
        lines.append(f"| {rank} | #{int(trial.trial_id) + 1} (trial_{trial.trial_id}) | {values} | "
                     f"{statistics.mean(accs):.4f}{spread}{note} "
                     f"|{digit_cell} {len(accs)} |")
    return "\n".join(lines) + "\n"


def _short(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_outputs(rows, grid, out):
    """trials.md and best_config.json from the finished trials of this grid (trial_rows)."""
    write_text(os.path.join(out, "trials.md"), trials_markdown(rows, grid))
    write_json(os.path.join(out, "best_config.json"), rows[0][1])
