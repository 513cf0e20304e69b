"""mnistcompare-tune: keras-tuner searches from the command line (see mnistcompare.tuning.search).

    mnistcompare-tune --arch siamese --grid channels=8,16,32 --grid hidden=64,128 \\
        --grid alpha=0.2:0.8:0.2 --runs-per-trial 3 --out runs/tune
    mnistcompare-tune --tuner bayesian --max-trials 20 --grid lr=1e-4..1e-2:log --grid alpha=0..1
    mnistcompare-tune --study report001-table4 --out docs/results/report001-table4

Arguments, grids and data folders are checked before TensorFlow is imported.
"""
import glob
import json
import os
import shutil
import statistics
import sys

from mnistcompare.cli import (Parser, add_config_arguments, add_data_arguments, add_tensorboard_argument,
                              config_from_args, data_source, explicit_flags, run)
from mnistcompare.config import MAX_PAIRS, Config
from mnistcompare.errors import RunError, UserError
from mnistcompare.experiments import console_text, earlier_results, evaluate, markdown_table
from mnistcompare.files import check_writable, make_out, run_folder, write_json, write_text
from mnistcompare.reports import Entry
from mnistcompare.runtime import DEFAULT_JOBS, start_tensorflow
from mnistcompare.workers import LAUNCHED, WORKERS, launch_workers, without_flag
from . import PROJECT, SEARCH_FILE, TUNERS, check_bayesian
from .grid import MAX_POINTS, parse_grid
from .studies import SEARCHES, final_test, results_markdown, stage_record


def check_search(out, search, overwrite):
    """Refuse an --out that holds another search (its space, tuner, base config or protocol differ), or whose
    search.json is damaged; the search is saved there once it is known to be ours."""
    def settled(search):
        # A field added since takes its default, which that search ran with (the tuner and trials too).
        return json.loads(json.dumps({"tuner": "grid", "max_trials": None, **search,
                                      "base": Config.from_dict(search["base"]).to_dict()}))

    path = os.path.join(out, SEARCH_FILE)
    if overwrite or not os.path.isdir(os.path.join(out, PROJECT)):
        return
    try:
        with open(path) as f:
            saved = settled(json.load(f))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError, UserError) as e:
        raise UserError(f"{path} is damaged or missing ({type(e).__name__}): the search in {out} "
                        "cannot be resumed; pass --overwrite to start it again") from None
    if saved != settled(search):
        raise UserError(f"--out {out} holds another search (its grid, base configuration or protocol differ); "
                        "choose another folder or pass --overwrite")


def damaged_file(project):
    """The first of keras-tuner's files in `project` that is not JSON (else the folder)."""
    for path in sorted(glob.glob(os.path.join(project, "**", "*.json"), recursive=True)):
        try:
            with open(path) as f:
                json.load(f)
        except (OSError, ValueError):
            return path
    return f"keras-tuner's project {project}"


# -- mnistcompare-tune --------------------------------------------------------------
def tune_parser():
    parser = Parser(
        prog="mnistcompare-tune",
        description="keras-tuner search over a Config: each trial trains --runs-per-trial rounds and scores "
                    "the mean validation accuracy (pairs from held-out MNIST training images); then the best "
                    "configuration is tested over --final-rounds rounds. Rerunning the same command resumes.",
        epilog="examples: mnistcompare-tune --arch siamese --grid channels=8,16,32 --grid alpha=0.2:0.8:0.2 "
               "--out runs/tune; mnistcompare-tune --tuner bayesian --max-trials 20 --grid lr=1e-4..1e-2:log "
               "--grid alpha=0..1 --out runs/bayes; the reports' searches: "
               + "; ".join(f"--study {name} ({search.about})" for name, search in SEARCHES.items()))
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=VALUES",
                        help="an axis of the search: NAME=a,b,c or NAME=start:stop:step (values), or "
                             "NAME=low..high or NAME=low..high:log (a range: not for --tuner grid); NAME is a "
                             "training option (alpha, lr, dropout, batch_size, ...) or channels, hidden, head, "
                             "layers, head_layers, kernel, widths (16-32-64). Repeat for more axes.")
    parser.add_argument("--tuner", choices=TUNERS, default="grid",
                        help="keras-tuner's GridSearch (every point, the default), RandomSearch, "
                             "BayesianOptimization (pip install 'mnistcompare[bayesian]') or Hyperband (its epoch budgets "
                             "up to --epochs)")
    parser.add_argument("--max-trials", type=int, default=None, metavar="N",
                        help="trials of --tuner random or bayesian (default: 10)")
    parser.add_argument("--study", choices=list(SEARCHES), default=None,
                        help="one of the reports' own searches, staged as the report ran it, with its "
                             "results page in --out (default --out docs/results/NAME)")
    parser.add_argument("--runs-per-trial", type=int, default=None,
                        help="rounds per trial, their mean the score (default: 3; a --study: its own, "
                             "on its results page)")
    parser.add_argument("--val-pairs", type=int, default=1000, help="validation pairs per round (default: 1000)")
    parser.add_argument("--final-rounds", type=int, default=None,
                        help="test rounds of the best configuration (default: 10; a --study: its own; "
                             "0: none)")
    parser.add_argument("--workers", type=int, default=0,
                        help="start a chief and this many workers on 127.0.0.1 (default: 0, one process)")
    add_config_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--out", default=None, help="output folder (default: runs/tune)")
    parser.add_argument("--overwrite", action="store_true", help="start the search again")
    parser.add_argument("--quiet", action="store_true", help="no progress output (keras-tuner's tables, the trials "
                                                              "done and time left)")
    add_tensorboard_argument(parser, "one run per trial (and round), DIR/TRIAL/execution0[/round-R], with each "
                                     "trial's values and score for TensorBoard's HParams dashboard")
    return parser


def tune_main(argv=None):
    args = tune_parser().parse_args(argv)

    def main():
        if args.study:
            return study_main(args)
        args.out = args.out or "runs/tune"
        args.runs_per_trial = 3 if args.runs_per_trial is None else args.runs_per_trial
        args.final_rounds = 10 if args.final_rounds is None else args.final_rounds
        check_counts(args)
        base = config_from_args(args)
        grid = parse_grid(args.grid, base, ranges=args.tuner != "grid")
        if base.pairs + args.val_pairs > MAX_PAIRS["train"]:
            raise UserError(f"--pairs + --val-pairs must be at most {MAX_PAIRS['train']} (MNIST train)")
        source = data_source(args)
        check_paths(args)
        search = {"grid": grid, "base": base.to_dict(), "runs_per_trial": args.runs_per_trial,
                  "val_pairs": args.val_pairs, "tuner": args.tuner, "max_trials": args.max_trials}
        check_search(args.out, search, args.overwrite)
        role = os.environ.get("KERASTUNER_TUNER_ID", "")
        if (role and "chief" not in role) or LAUNCHED in os.environ:
            # a worker (the chief writes the outputs), or the chief of a launcher that holds the folder
            search_grid(args, base, grid, source)
            return
        with run_folder(args.out):
            if args.overwrite:  # here, once: every process deleting the project would race
                shutil.rmtree(os.path.join(args.out, PROJECT), ignore_errors=True)
            write_json(os.path.join(args.out, SEARCH_FILE), search)
            if args.workers:
                given = sys.argv[1:] if argv is None else argv
                launch_workers(without_flag(without_flag(given, "--workers"), "--overwrite"), args.workers, args.out)
                return
            search_grid(args, base, grid, source)

    run(main, "mnistcompare-tune", argv)


def check_counts(args):
    for name in ("runs_per_trial", "val_pairs"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be a positive integer, got {getattr(args, name)}")
    if args.final_rounds < 0 or args.workers < 0:
        raise UserError("--final-rounds and --workers must be >= 0")
    if args.max_trials is not None and args.tuner not in ("random", "bayesian"):
        raise UserError(f"--max-trials is for --tuner random or bayesian (--tuner {args.tuner} sets its own)")
    if args.tuner == "bayesian":
        check_bayesian()
    if args.tuner in ("random", "bayesian"):
        args.max_trials = 10 if args.max_trials is None else args.max_trials
        if not 1 <= args.max_trials <= MAX_POINTS:
            raise UserError(f"--max-trials: must be in [1, {MAX_POINTS:,}], got {args.max_trials}")


def check_paths(args):
    """--out and --tensorboard writable, before TensorFlow starts."""
    check_writable(args.out)
    if args.tensorboard:
        check_writable(args.tensorboard, "--tensorboard")


def study_main(args):
    """mnistcompare-tune --study NAME (see mnistcompare.tuning.studies)."""
    if args.grid or args.tuner != "grid" or args.workers or args.preset or args.config:
        raise UserError("--study runs the report's own grids in one process: give no --grid, --tuner, --workers, "
                        "--preset or --config with it")
    search = SEARCHES[args.study]
    args.out = args.out or os.path.join("docs", "results", args.study)
    args.runs_per_trial = args.runs_per_trial or search.runs_per_trial
    args.final_rounds = search.final_rounds if args.final_rounds is None else args.final_rounds
    check_counts(args)
    changes = explicit_flags(args)
    base = search.base().replace(**changes).validate()
    off = [f"{name.replace('_', '-')} {value}" for name, value in changes.items() if name != "seed"]
    if args.runs_per_trial < search.runs_per_trial:
        off.append(f"runs per trial {args.runs_per_trial}, the study's {search.runs_per_trial}")
    source = data_source(args)
    check_paths(args)
    with run_folder(args.out):
        stages = []
        for number, stage in enumerate(search.stages, 1):
            start = base if not search.staged or not stages else stages[-1]["config"]
            out = os.path.join(args.out, f"stage-{number}")
            plan = {"grid": stage.grid, "base": start.to_dict(), "runs_per_trial": args.runs_per_trial,
                    "val_pairs": args.val_pairs, "tuner": "grid", "max_trials": None}
            check_search(out, plan, args.overwrite)
            make_out(out)
            write_json(os.path.join(out, SEARCH_FILE), plan)
            print(f"{args.study}, stage {number}/{len(search.stages)} ({stage.label}) -> {out}/", flush=True)
            rows = search_grid(args, start, stage.grid, source, out=out, final=False)
            stages.append(stage_record(stage, rows))
        chosen = [record["config"] for record in (stages[-1:] if search.staged else stages)]
        labels = ["chosen"] if search.staged else [f"best {stage.label}" for stage in search.stages]
        final = final_test(args, search, chosen, labels, source, args.out) if args.final_rounds else None
        results = {"search": args.study, "about": search.about, "source": search.source, "staged": search.staged,
                   "runs_per_trial": args.runs_per_trial, "val_pairs": args.val_pairs,
                   "stages": [{**s, "config": s["config"].to_dict()} for s in stages],
                   "final": final, "assumptions": list(search.assumptions), "off_protocol": "; ".join(off) or None}
        write_json(os.path.join(args.out, "results.json"), results, compact=True)
        text = results_markdown(results)
        write_text(os.path.join(args.out, "results.md"), text)
        print(console_text(text, args.out), end="")


def search_grid(args, base, grid, source, out=None, final=True):
    """Run (or resume) the search; as the chief, write trials.md and best_config.json and test the best
    configuration. Returns the tuner's finished trials, best first (None in a worker)."""
    start_tensorflow(rounds_at_once=int(os.environ.get(WORKERS, 1)))
    from .search import make_tuner, trial_rows, trials_markdown, write_outputs
    out = out or args.out
    try:  # keras-tuner reloads its project here
        tuner = make_tuner(base, grid, out, args.runs_per_trial, args.val_pairs, source, kind=args.tuner,
                           max_trials=args.max_trials, progress=not args.quiet)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RuntimeError) as e:
        raise UserError(f"{damaged_file(os.path.join(out, PROJECT))} is damaged ({type(e).__name__}); "
                        "pass --overwrite to start the search again") from None
    callbacks = []
    if args.tensorboard:
        import keras
        callbacks.append(keras.callbacks.TensorBoard(args.tensorboard, write_graph=False))
    try:
        tuner.search(callbacks=callbacks, verbose=0 if args.quiet else 1)
    except Exception as e:  # keras-tuner's FatalError, from a failed round (see ComparisonTuner)
        if type(e).__name__ != "FatalError":
            raise
        raise RunError(f"{e}; finished trials are kept: rerun the same command to retry") from None
    role = os.environ.get("KERASTUNER_TUNER_ID", "")
    if role and "chief" not in role:
        return None
    rows = trial_rows(tuner, grid)
    if not rows:
        raise RunError(f"no finished trial in {out}")
    best = [Entry("best trial", Config.from_dict(rows[0][1]))]
    if final and args.final_rounds:  # a final/ of another best is refused before anything is written
        earlier_results(best, os.path.join(out, "final"))
    write_outputs(rows, grid, out)
    print(trials_markdown(rows, grid), end="")
    accs = [r["val_compare_accuracy"] for r in rows[0][2]]
    print(f"best: {', '.join(f'{k}={rows[0][0].hyperparameters.values[k]}' for k in grid)} "
          f"(validation {statistics.mean(accs):.4f}); config in {out}/best_config.json")
    if final and args.final_rounds:
        results = evaluate(best, args.final_rounds, os.path.join(out, "final"), source,
                           log=lambda line: print(line, flush=True), jobs=DEFAULT_JOBS, progress=not args.quiet)
        print(console_text(markdown_table(results), os.path.join(out, "final")), end="")
    return rows


if __name__ == "__main__":
    tune_main()
