"""mnistcompare-tune: the command line of the grid search (see mnistcompare.tuning.search).

    mnistcompare-tune --arch siamese --grid channels=8,16,32 --grid hidden=64,128 \\
        --grid alpha=0.2:0.8:0.2 --runs-per-trial 3 --out runs/tune

Arguments, grids and data folders are checked before TensorFlow is imported.
"""
import ctypes
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

from mnistcompare.cli import (Parser, add_config_arguments, add_data_arguments, add_tensorboard_argument,
                              config_from_args, data_source, make_out, run)
from mnistcompare.config import MAX_PAIRS, Config
from mnistcompare.errors import RunError, UserError
from mnistcompare.files import FolderLock, write_json
from mnistcompare.tuning import PROJECT
from mnistcompare.tuning.grid import parse_grid

# A chief or worker started by the launcher: the installed package, never a module name that the
# working directory could shadow (-c puts the working directory first on sys.path; it is dropped).
WORKER_CODE = "import sys; del sys.path[0]; from mnistcompare.tuning.cli import tune_main; tune_main()"
LAUNCHED = "MNISTCOMPARE_TUNE_LAUNCHER"  # set in the children of the launcher, which holds the folder
WORKERS = "MNISTCOMPARE_TUNE_WORKERS"  # how many of them train at once: each gets its share of the cores


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def without_flag(argv, flag):
    """`argv` without `flag VALUE` / `flag=VALUE` (or a bare `flag` for switches)."""
    args, skip = [], False
    for i, a in enumerate(argv):
        if skip:
            skip = False
        elif a == flag:
            skip = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        elif not a.startswith(flag + "="):
            args.append(a)
    return args


def _die_with_parent():
    """In a child, before exec: the kernel sends it SIGTERM when the launcher ends, however it ends
    (even by SIGKILL), so chief and workers never search on as orphans (Linux)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os._exit(1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM ends the launcher as Ctrl-C does: children stopped, one line


def launch_workers(argv, workers, out, poll=0.2):
    """Start a chief and `workers` workers of this same command on 127.0.0.1, and watch them.

    The chief serves the oracle and, once the grid is done, writes the outputs
    and runs the final rounds; its output is shown, the workers' go to
    OUT/worker-N.log. If any of them dies (a worker killed, the chief
    crashed), the others are ended within a second and the launcher fails with
    one line: finished trials are kept, and rerunning the same command resumes
    (trials that were running are retried). SIGTERM or SIGINT to the launcher
    ends them all too; SIGKILL to it ends them through the kernel.
    """
    command = [sys.executable, "-c", WORKER_CODE, *argv]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port()),
           LAUNCHED: str(os.getpid()), WORKERS: str(workers)}
    logs = [open(os.path.join(out, f"worker-{n}.log"), "w") for n in range(workers)]
    procs = {"chief": subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": "chief"},
                                       preexec_fn=_die_with_parent)}
    for n, log in enumerate(logs):
        procs[f"worker {n}"] = subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": f"tuner{n}"}, stdout=log,
                                                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            codes = {name: p.poll() for name, p in procs.items()}
            failed = [name for name, code in codes.items() if code not in (None, 0)]
            if failed:
                name, code = failed[0], codes[failed[0]]
                how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                where = "" if name == "chief" else f"; see {out}/worker-{name.split()[1]}.log"
                raise RunError(f"tune {name} ended ({how}){where}; the others were stopped, finished trials are "
                               "kept: rerun the same command to resume")
            if codes["chief"] == 0:
                return 0
            time.sleep(poll)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for p in procs.values():
            if p.poll() is None:
                p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for log in logs:
            log.close()


def search_file(out):
    return os.path.join(out, "search.json")


def check_search(out, search, overwrite):
    """Refuse an --out that holds another search (its grid, base config or protocol differ);
    the search is saved there once it is known to be ours (`save_search`)."""
    path = search_file(out)
    if overwrite or not os.path.isdir(os.path.join(out, PROJECT)):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
        # Read as train and evaluate read a saved config: a field added since takes its default, which is
        # what that search ran with.
        saved["base"] = Config.from_dict(saved["base"]).to_dict()
        same = json.loads(json.dumps(saved)) == json.loads(json.dumps(search))
    except (OSError, ValueError, KeyError, TypeError, UserError):
        same = False
    if not same:
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
        make_out(args.out)
        with FolderLock(args.out):
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

        results = evaluate([Entry("best", Config.from_dict(best))], args.final_rounds,
                           os.path.join(args.out, "final"), source,
                           log=lambda line: print(line, flush=True), jobs=DEFAULT_JOBS, progress=not args.quiet)
        print(markdown_table(results), end="")


if __name__ == "__main__":
    tune_main()
