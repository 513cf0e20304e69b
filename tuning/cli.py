"""mnistcompare-tune: the command line of the grid search (see mnistcompare.tuning.search).

    mnistcompare-tune --arch siamese --grid channels=8,16,32 --grid hidden=64,128 \\
        --grid alpha=0.2:0.8:0.2 --runs-per-trial 3 --out runs/tune

Arguments, grids and data folders are checked before TensorFlow is imported.
"""
import json
import os
import statistics
import sys

from mnistcompare.cli import (Parser, add_config_arguments, add_data_arguments, add_tensorboard_argument,
                              config_from_args, data_source, run)
from mnistcompare.config import MAX_PAIRS, Config
from mnistcompare.errors import RunError, UserError
from mnistcompare.files import run_folder, write_json
from mnistcompare.tuning import PROJECT
from mnistcompare.tuning.grid import parse_grid
from mnistcompare.workers import LAUNCHED, WORKERS, launch_workers, without_flag



def search_file(out):
    return os.path.join(out, "search.json")


def check_search(out, search, overwrite):
    """Refuse an --out that holds another search (its grid, base config or protocol differ);
    the search is saved there once it is known to be ours (`save_search`)."""
    def ours(path):
        try:
            with open(path) as f:
                saved = json.load(f)
            # Read as train and evaluate read a saved config: a field added since takes its default, which is
            # what that search ran with.
            saved["base"] = Config.from_dict(saved["base"]).to_dict()
            return json.loads(json.dumps(saved)) == json.loads(json.dumps(search))
        except (OSError, ValueError, KeyError, TypeError, UserError):
            return False

    if not overwrite and os.path.isdir(os.path.join(out, PROJECT)) and not ours(search_file(out)):
        raise UserError(f"--out {out} holds another search (its grid, base configuration or protocol differ); "
                        "choose another folder or pass --overwrite")


def save_search(out, search):
    write_json(search_file(out), search)


# -- mnistcompare-tune --------------------------------------------------------------
def tune_parser():
    parser = Parser(
        prog="mnistcompare-tune",
        description="keras-tuner grid search over a Config: each trial trains --runs-per-trial rounds and scores "
                    "the mean validation accuracy (pairs from held-out MNIST training images); then the best "
                    "configuration is tested over --final-rounds rounds. Rerunning the same command resumes.",
        epilog="example: mnistcompare-tune --arch siamese --grid channels=8,16,32 --grid hidden=64,128 "
               "--grid alpha=0.2:0.8:0.2 --out runs/tune")
    parser.add_argument("--grid", action="append", default=[], metavar="NAME=VALUES",
                        help="a grid axis: NAME=a,b,c or NAME=start:stop:step; NAME is a training option "
                             "(alpha, lr, dropout, batch_size, ...) or channels, hidden, head, layers, "
                             "head_layers, kernel. Repeat for more axes.")
    parser.add_argument("--runs-per-trial", type=int, default=3, help="rounds per grid point (default: 3)")
    parser.add_argument("--val-pairs", type=int, default=1000, help="validation pairs per round (default: 1000)")
    parser.add_argument("--final-rounds", type=int, default=10,
                        help="test rounds of the best configuration (default: 10; 0: none)")
    parser.add_argument("--workers", type=int, default=0,
                        help="start a chief and this many workers on 127.0.0.1 (default: 0, one process)")
    add_config_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--out", default="runs/tune", help="output folder (default: runs/tune)")
    parser.add_argument("--overwrite", action="store_true", help="start the search again")
    parser.add_argument("--quiet", action="store_true", help="no progress output (keras-tuner's tables, the trials "
                                                              "done and time left)")
    add_tensorboard_argument(parser, "one run per trial and round, DIR/trial_N/round-R, and each trial's "
                                     "grid values and score for TensorBoard's HParams dashboard")
    return parser


def tune_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = tune_parser().parse_args(argv)

    def main():
        import shutil

        for name in ("runs_per_trial", "val_pairs"):
            if getattr(args, name) < 1:
                raise UserError(f"--{name.replace('_', '-')}: must be a positive integer, got {getattr(args, name)}")
        if args.final_rounds < 0 or args.workers < 0:
            raise UserError("--final-rounds and --workers must be >= 0")
        base = config_from_args(args)
        grid = parse_grid(args.grid, base)
        if base.pairs + args.val_pairs > MAX_PAIRS["train"]:
            raise UserError(f"--pairs + --val-pairs must be at most {MAX_PAIRS['train']} (MNIST train)")
        source = data_source(args)
        search = {"grid": grid, "base": base.to_dict(), "runs_per_trial": args.runs_per_trial,
                  "val_pairs": args.val_pairs}
        check_search(args.out, search, args.overwrite)
        role = os.environ.get("KERASTUNER_TUNER_ID", "")
        if (role and "chief" not in role) or LAUNCHED in os.environ:
            # a worker (the chief writes the outputs), or the chief of a launcher that holds the folder
            search_grid(args, base, grid, source)
            return
        with run_folder(args.out):
            if args.overwrite:  # here, once: every process deleting the project would race
                shutil.rmtree(os.path.join(args.out, PROJECT), ignore_errors=True)
            save_search(args.out, search)
            if args.workers:
                launch_workers(without_flag(without_flag(argv, "--workers"), "--overwrite"), args.workers, args.out)
                return
            search_grid(args, base, grid, source)

    run(main, "mnistcompare-tune")


def search_grid(args, base, grid, source):
    from mnistcompare.runtime import start_tensorflow

    start_tensorflow(rounds_at_once=int(os.environ.get(WORKERS, 1)))
    from mnistcompare.tuning.search import make_tuner, trials_markdown, write_outputs

    tuner = make_tuner(base, grid, args.out, args.runs_per_trial, args.val_pairs, source, progress=not args.quiet)
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
        return
    best, rows = write_outputs(tuner, grid, args.out)
    print(trials_markdown(rows, grid), end="")
    accs = [r["val_compare_accuracy"] for r in rows[0][2]]
    print(f"best: {', '.join(f'{k}={rows[0][0].hyperparameters.values[k]}' for k in grid)} "
          f"(validation {statistics.mean(accs):.4f}); config in {args.out}/best_config.json")
    if args.final_rounds:
        from mnistcompare.experiments import evaluate, markdown_table
        from mnistcompare.reports import Entry
        from mnistcompare.runtime import DEFAULT_JOBS

        results = evaluate([Entry("best trial", Config.from_dict(best))], args.final_rounds,
                           os.path.join(args.out, "final"), source,
                           log=lambda line: print(line, flush=True), jobs=DEFAULT_JOBS, progress=not args.quiet)
        print(markdown_table(results), end="")


if __name__ == "__main__":
    tune_main()
