"""mnistcompare-tune: the command line of the grid search (see tuning.search).

    mnistcompare-tune --arch siamese --grid channels=8,16,32 --grid hidden=64,128 \\
        --grid alpha=0.2:0.8:0.2 --runs-per-trial 3 --out runs/tune

Arguments, grids and data folders are checked before TensorFlow is imported.
"""
import os
import shutil
import socket
import statistics
import subprocess
import sys

from mnistcompare.cli import (Parser, add_config_arguments, add_data_arguments, config_from_args, make_out, run,
                              start_tensorflow)
from mnistcompare.config import MAX_PAIRS, Config, UserError
from mnistcompare.data import find_source
from tuning import PROJECT
from tuning.grid import parse_grid


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


def launch_workers(argv, workers, out, timeout=None):
    """Start a chief and `workers` workers of this same command on 127.0.0.1; wait for all.

    The chief serves the oracle and, once the grid is done, writes the outputs
    and runs the final rounds; its output is shown, the workers' go to
    OUT/worker-N.log.
    """
    command = [sys.executable, "-m", "tuning.cli", *argv]
    env = {**os.environ, "KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(free_port())}
    logs = [open(os.path.join(out, f"worker-{n}.log"), "w") for n in range(workers)]
    chief = subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": "chief"})
    procs = [subprocess.Popen(command, env={**env, "KERASTUNER_TUNER_ID": f"tuner{n}"}, stdout=log,
                              stderr=subprocess.STDOUT) for n, log in enumerate(logs)]
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
        code = chief.wait(timeout=timeout)
    finally:
        for p in [chief, *procs]:
            if p.poll() is None:
                p.kill()
        for log in logs:
            log.close()
    if any(codes):
        raise UserError(f"a worker failed (exit codes {codes}); see {out}/worker-*.log")
    return code


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
    return parser


def tune_main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args = tune_parser().parse_args(argv)

    def main():
        for name in ("runs_per_trial", "val_pairs"):
            if getattr(args, name) < 1:
                raise UserError(f"--{name.replace('_', '-')}: must be a positive integer, got {getattr(args, name)}")
        if args.final_rounds < 0 or args.workers < 0:
            raise UserError("--final-rounds and --workers must be >= 0")
        base = config_from_args(args)
        grid = parse_grid(args.grid, base)
        if base.pairs + args.val_pairs > MAX_PAIRS["train"]:
            raise UserError(f"--pairs + --val-pairs must be at most {MAX_PAIRS['train']} (MNIST train)")
        find_source(args.data_dir, args.idx_dir)
        make_out(args.out)
        if args.workers:
            if args.overwrite:  # here, once: every process deleting the project would race
                shutil.rmtree(os.path.join(args.out, PROJECT), ignore_errors=True)
            sys.exit(launch_workers(without_flag(without_flag(argv, "--workers"), "--overwrite"), args.workers,
                                    args.out))
        start_tensorflow()
        from tuning.search import make_tuner, trials_markdown, write_outputs

        tuner = make_tuner(base, grid, args.out, args.runs_per_trial, args.val_pairs, args.data_dir, args.idx_dir,
                           overwrite=args.overwrite)
        tuner.search()
        role = os.environ.get("KERASTUNER_TUNER_ID", "")
        if role and "chief" not in role:
            return  # a worker: the chief, which holds the oracle, writes the outputs
        best, rows = write_outputs(tuner, grid, args.out)
        print(trials_markdown(rows, grid), end="")
        print(f"best: {', '.join(f'{k}={rows[0][0].hyperparameters.values[k]}' for k in grid)} "
              f"(validation {statistics.mean(rows[0][2]):.4f}); config in {args.out}/best_config.json")
        if args.final_rounds:
            from mnistcompare.experiments import DEFAULT_JOBS, Entry, evaluate, markdown_table

            results = evaluate([Entry("best", Config.from_dict(best))], args.final_rounds,
                               os.path.join(args.out, "final"), args.data_dir, args.idx_dir,
                               log=lambda line: print(line, flush=True), jobs=DEFAULT_JOBS)
            print(markdown_table(results), end="")

    run(main, "mnistcompare-tune")


if __name__ == "__main__":
    tune_main()
