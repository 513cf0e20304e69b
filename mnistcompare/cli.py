"""Command-line programs. Every option of `Config` is a flag, generated from the dataclass.

Bad flags and missing data end in one line on stderr and exit code 2. The
arguments and the data folders are checked before TensorFlow is imported, so
a mistake is reported at once.
"""
import argparse
import dataclasses
import os
import shutil
import sys
import time

from mnistcompare.config import PRESETS, Config, UserError, preset
from mnistcompare.data import find_source
from mnistcompare.experiments import DEFAULT_JOBS, WorkerLost

EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit 2."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def _tuple_type(element):
    def parse(text):
        if text.strip().lower() == "none":
            return ()
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
        try:
            return tuple(element(s) for s in items)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {element.__name__}s, got {text!r}") from None
    return parse


def add_config_arguments(parser):
    """--preset, --config and one flag per Config field (flags override both)."""
    parser.add_argument("--preset", help=f"start from a named configuration: {', '.join(PRESETS)}")
    parser.add_argument("--config", metavar="FILE",
                        help="start from a saved config.json instead (flags override it)")
    group = parser.add_argument_group("model, training and data options (defaults: report 000's siamese net)")
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        default = ",".join(map(str, f.default)) if f.type is tuple else f.default
        help = f"{f.metadata['help']} (default: {default:.4g})" if f.type is float else \
            f"{f.metadata['help']} (default: {default})"
        if f.type is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        elif f.type is tuple:
            element = type(f.default[0])
            group.add_argument(flag, type=_tuple_type(element), default=None, metavar="A,B,..", help=help)
        else:
            group.add_argument(flag, type=f.type, default=None, metavar={int: "N", float: "X", str: "NAME"}[f.type],
                               help=help)


def add_data_arguments(parser):
    group = parser.add_argument_group("MNIST (offline)")
    group.add_argument("--data-dir", help="TFDS data dir holding mnist/ (default: $TFDS_DATA_DIR)")
    group.add_argument("--idx-dir", help="folder with the four MNIST IDX files, gzipped or not")


def explicit_flags(args):
    """The Config fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}


def config_from_args(args, preset_name=None):
    """Defaults < preset < --config < explicit flags; validated."""
    preset_name = preset_name or args.preset
    cfg = preset(preset_name) if preset_name else Config()
    if args.config:
        cfg = Config.load(args.config)
    return cfg.replace(**explicit_flags(args)).validate()


RUN_FILES = ("config.json", "metrics.json", "history.csv", "model.keras", "saved_model", "backup")


def check_out(out, cfg, overwrite):
    """True when `out` holds an unfinished run of `cfg` to resume; changes nothing.

    A finished run (metrics.json) is kept unless --overwrite; an unfinished run
    of another configuration is never mixed with this one.
    """
    if overwrite or not os.path.exists(out):
        return False
    if not os.path.isdir(out):
        raise UserError(f"--out {out}: exists and is not a folder")
    if os.path.exists(os.path.join(out, "metrics.json")):
        raise UserError(f"--out {out} holds a finished run; choose another folder or pass --overwrite")
    if os.path.exists(os.path.join(out, "config.json")):
        try:
            same = Config.load(os.path.join(out, "config.json")) == cfg
        except UserError:
            same = False
        if not same:
            raise UserError(f"--out {out} holds an unfinished run of another configuration; "
                            "choose another folder or pass --overwrite")
        return True
    return False


def make_out(out, overwrite=False):
    """Create the output folder (emptied of an earlier run's files with `overwrite`)."""
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the folder ({e.strerror})") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: folder is not writable")
    if overwrite:
        for name in RUN_FILES:
            path = os.path.join(out, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.unlink(path)


def quiet_tensorflow():
    """Import TensorFlow and Keras with their C++ start-up messages (absl, oneDNN) kept off stderr.

    TensorFlow prints them from C++ whatever TF_CPP_MIN_LOG_LEVEL says, so the
    stderr file descriptor is pointed at /dev/null for the import only.
    """
    if "tensorflow" in sys.modules:
        return
    # 3: not even C++ errors, such as Grappler's harmless "remapper failed" on LeakyReLU gradients
    # in a loop; a real failure still raises in Python. Set the variable to see them.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow():
    """TensorFlow as every command trains with it: imported quietly, each op on one thread
    (training.one_thread_per_op: a round's numbers then do not depend on evaluate --jobs)."""
    quiet_tensorflow()
    from mnistcompare.training import one_thread_per_op

    one_thread_per_op()


def run(main, prog):
    """Run a command body; user mistakes -> one line + exit 2, Ctrl-C -> exit 130."""
    try:
        main()
    except UserError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        # train resumes from its last finished epoch, evaluate from its last round, tune from its last trial
        print(f"\n{prog}: interrupted; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
    except WorkerLost as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        sys.exit(1)


# -- mnistcompare-train ----------------------------------------------------------
def train_parser():
    parser = Parser(
        prog="mnistcompare-train",
        description="Train one round on the 1000-pair protocol, print the accuracy, "
                    "and write config.json, metrics.json, history.csv, model.keras and saved_model/.",
        epilog="example: mnistcompare-train --preset report000-siamese --out runs/demo")
    add_config_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--out", help="output folder (default: runs/<name>-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    parser.add_argument("--strategy", choices=("none", "mirrored", "multiworker"), default="none",
                        help="tf.distribute strategy: mirrored = all local GPUs; multiworker = several machines "
                             "described by TF_CONFIG (default: none)")
    parser.add_argument("--no-xla", dest="xla", action="store_false",
                        help="export a SavedModel without XLA-compiled parts, for servers that run no XLA (TF "
                             "Serving without --xla_cpu_compilation_enabled); it serves about a third fewer pairs/s")
    return parser


def train_main(argv=None):
    args = train_parser().parse_args(argv)

    def main():
        cfg = config_from_args(args)
        find_source(args.data_dir, args.idx_dir)
        name = args.preset or cfg.arch
        out = args.out or os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        resuming = check_out(out, cfg, args.overwrite)
        start_tensorflow()
        import keras

        from mnistcompare.config import write_json
        from mnistcompare.data import load_pairs
        from mnistcompare.export import export_saved_model
        from mnistcompare.training import HistoryFile, make_strategy, train_round

        train, test = load_pairs(cfg, args.data_dir, args.idx_dir)  # data errors leave no folder behind
        make_out(out, args.overwrite)
        cfg.save(os.path.join(out, "config.json"))  # marks an unfinished run of this configuration
        history = HistoryFile(os.path.join(out, "history.csv"))
        # Order matters: the history row of an epoch is written before its backup,
        # so a run killed in between redoes that epoch and rewrites that row.
        # double_checkpoint: a kill while the weights are written falls back on the previous epoch's copy.
        backup = keras.callbacks.BackupAndRestore(os.path.join(out, "backup"), double_checkpoint=True)
        if resuming:
            print(f"resuming the unfinished run in {out}/", flush=True)
        model, metrics, _ = train_round(cfg, train, test, callbacks=[history, backup],
                                        verbose=0 if args.quiet else 1 if sys.stdout.isatty() else 2,
                                        strategy=make_strategy(args.strategy))
        metrics["epochs"] = history.epochs  # including the epochs of an interrupted earlier process
        model.save(os.path.join(out, "model.keras"))
        export_saved_model(model, cfg, os.path.join(out, "saved_model"), xla=args.xla)
        # Written last: its presence marks a finished run.
        write_json(os.path.join(out, "metrics.json"), {"name": name, **metrics, "config": cfg.to_dict()})

        digits = f", digit accuracy {metrics['test_digit_accuracy']:.4f}" if "test_digit_accuracy" in metrics else ""
        print(f"{name}: test accuracy {metrics['test_accuracy']:.4f}, train accuracy "
              f"{metrics['train_accuracy']:.4f}{digits}; {metrics['params']:,} parameters; "
              f"{metrics['train_seconds']:.1f} s fit ({metrics['epochs']} epochs)")
        print(f"outputs in {out}/: config.json metrics.json history.csv model.keras saved_model/")

    run(main, "mnistcompare-train")


# -- mnistcompare-evaluate -------------------------------------------------------
def evaluate_parser():
    from mnistcompare.experiments import STUDIES

    parser = Parser(
        prog="mnistcompare-evaluate",
        description="Train many rounds of one or more configurations (round r: seed+r for the pairs and the "
                    "weights) and write results.json, results.md, curves.png and rounds.png. Rerunning the "
                    "same command continues an interrupted evaluation.",
        epilog="examples: mnistcompare-evaluate --arch siamese,two_tower,baseline --rounds 10; "
               "mnistcompare-evaluate --study reports --rounds 10")
    parser.add_argument("--study", help=f"a named set of entries: {', '.join(STUDIES)} "
                                        "(flags below then apply to every entry)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per entry (default: 10)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                        help="rounds trained side by side, in N worker processes (default: one per CPU, "
                             "%(default)s here; use 1 on a GPU); a round's numbers do not depend on it")
    add_config_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--out", help="output folder (default: runs/evaluate-<what>)")
    parser.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    return parser


def entries_from_args(args):
    """--study, or --preset P[,Q..], or --arch A[,B..]: the entries to evaluate, validated."""
    from mnistcompare.experiments import Entry, study

    if args.study:
        if args.preset or args.config:
            raise UserError("--study: give a study, or --preset/--config, not both")
        changes = explicit_flags(args)
        return args.study, [Entry(e.name, e.config.replace(**changes).validate(), e.published)
                            for e in study(args.study)]
    if args.preset:
        names = [n for n in args.preset.split(",") if n]
        return ",".join(names), [Entry(n, config_from_args(args, preset_name=n)) for n in names]
    archs = [a for a in (args.arch or "siamese").split(",") if a]
    entries = []
    for arch in archs:
        args.arch = arch
        entries.append(Entry(arch, config_from_args(args)))
    return ",".join(archs), entries


def evaluate_main(argv=None):
    args = evaluate_parser().parse_args(argv)

    def main():
        for flag in ("rounds", "jobs"):
            if getattr(args, flag) < 1:
                raise UserError(f"--{flag}: must be a positive integer, got {getattr(args, flag)}")
        label, entries = entries_from_args(args)
        find_source(args.data_dir, args.idx_dir)
        out = args.out or os.path.join("runs", "evaluate-" + label.replace(",", "-"))
        make_out(out)
        from mnistcompare.experiments import evaluate, markdown_table

        if args.jobs == 1:  # trained here; with --jobs N, worker processes import TensorFlow
            start_tensorflow()
        print(f"{len(entries)} entries x {args.rounds} rounds -> {out}/", flush=True)
        results = evaluate(entries, args.rounds, out, args.data_dir, args.idx_dir, overwrite=args.overwrite,
                           log=lambda line: print(line, flush=True), jobs=args.jobs)
        print(markdown_table(results), end="")
        print(f"outputs in {out}/: results.json results.md curves.png rounds.png")

    run(main, "mnistcompare-evaluate")


if __name__ == "__main__":
    train_main()
