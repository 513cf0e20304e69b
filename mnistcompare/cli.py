"""Command-line programs. Every option of `Config` is a flag, generated from the dataclass.

A user's mistake is one line on stderr and exit 2, checked before TensorFlow is imported; a run that cannot
go on (diverged, a worker died, a full disk) one line and exit 1, its finished work kept.
"""
import argparse
import atexit
import dataclasses
import faulthandler
import itertools
import json
import os
import re
import signal
import sys
import textwrap
import time
import warnings

import numpy as np

import mnistcompare
from mnistcompare.config import Config, bounds_text, sections, shown_value
from mnistcompare.data import find_source, load_pairs
from mnistcompare.errors import MnistcompareWarning, RunError, UserError
from mnistcompare.experiments import check_entries, console_text, evaluate, markdown_table, tables_summary
from mnistcompare.files import (FolderLock, atomic_path, check_writable, clear_run, make_out, run_folder, write_json,
                                write_text)
from mnistcompare.predict import (PREDICT_BATCH, SHOW_PAIRS, answer, batches, check_file, describe, find_saved_model,
                                  load_image, read_pairs_file, show, to_mnist)
from mnistcompare.reports import ALIASES, PRESETS, STUDIES, TABLES, Entry, preset, study
from mnistcompare.runtime import (DEFAULT_JOBS, STRATEGIES, cluster_role, own_process, peer_failure, quiet_tensorflow,
                                  start_tensorflow)
from mnistcompare.workers import LAUNCHED, connect

EXIT_USER_ERROR = 2


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block) and exit 2, with --version."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {mnistcompare.__version__}")

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}\n")


def _int(text):
    """An int from ASCII digits only ('²'.isdigit() is True, int('²') fails)."""
    text = text.strip()
    if not text.lstrip("+-").isascii() or not text.lstrip("+-").isdigit():
        raise ValueError(text)
    return int(text)


_int.__name__ = "int"  # argparse names the type in its errors


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
            raise argparse.ArgumentTypeError(f"expected comma-separated {element.__name__}s, "
                                             f"got {text!r}") from None
    return parse


def add_config_arguments(parser):
    """--preset, --config and one flag per Config field (flags override both)."""
    parser.add_argument("--preset", help=f"start from a named configuration: {', '.join(PRESETS)}")
    parser.add_argument("--config", metavar="FILE", help="start from a saved config.json instead (flags override it)")
    for name, fields in sections().items():
        group = parser.add_argument_group(f"{name} options (defaults: report 000's siamese net)")
        for f in fields:
            add_config_flag(group, f)


def add_config_flag(group, f):
    """The flag of one Config field, with its help, bounds and default."""
    flag = "--" + f.name.replace("_", "-")
    default = ",".join(map(str, f.default)) if f.type is tuple else f"{f.default:.4g}" if f.type is float else f.default
    bounds = bounds_text(f)  # checked by Config.validate, so that a config file gets the same errors
    help = f"{f.metadata['help']}{'; ' + bounds if bounds else ''} (default: {default})"
    if f.type is bool:
        group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
    elif f.type is tuple:
        element = _int if f.name != "padding" else str
        group.add_argument(flag, type=_tuple_type(element), default=None, metavar="A,B,..", help=help)
    else:
        kind = _int if f.type is int else f.type
        group.add_argument(flag, type=kind, default=None, metavar={int: "N", float: "X", str: "NAME"}[f.type],
                           help=help)


def add_data_arguments(parser):
    group = parser.add_argument_group("MNIST (see docs/getting-mnist.md)")
    group.add_argument("--data-dir", help="TFDS data dir holding mnist/ (default: $TFDS_DATA_DIR)")
    group.add_argument("--idx-dir", help="folder with the four MNIST IDX files, gzipped or not")
    group.add_argument("--npz", metavar="FILE", help="Keras' mnist.npz (default when nothing else is found: "
                                                     "~/.keras/datasets/mnist.npz)")
    group.add_argument("--no-download", dest="download", action="store_false",
                       help="never download MNIST (by default, with nothing found, Keras' own download fetches "
                            "it once into ~/.keras/datasets)")


def add_tensorboard_argument(parser, what):
    parser.add_argument("--tensorboard", metavar="DIR", help=f"write TensorBoard logs to DIR: {what} "
                                                             "(see them with: tensorboard --logdir DIR)")


def data_source(args):
    return find_source(args.data_dir, args.idx_dir, args.npz, args.download)


def explicit_flags(args):
    """The Config fields given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}


def config_from_args(args, preset_name=None):
    """Defaults < preset < --config < explicit flags; validated."""
    preset_name = preset_name or args.preset
    cfg = preset(preset_name) if preset_name else Config()
    if args.config:
        cfg = Config.load(args.config)
        try:
            cfg.validate()
        except UserError as e:  # named as the file names it: its key, not a flag
            key = re.sub(r"^--([\w-]+):", lambda m: '"' + m.group(1).replace("-", "_") + '":', str(e))
            raise UserError(f"--config {args.config}: {key}") from None
    return cfg.replace(**explicit_flags(args)).validate()


# The SavedModel in TF Serving's layout, BASE/<version>/: a model server pointed at DIR/saved_model serves it.
SAVED_MODEL = os.path.join("saved_model", "1")
# What mnistcompare-train writes in its folder; --overwrite deletes these and nothing else.
RUN_FILES = ("metrics.json", "history.csv", "model.keras", "pairs.png", "confusion.png", "config.json",
             os.path.join("backup", "epoch-*.npz"),
             *(os.path.join(SAVED_MODEL, name) for name in ("saved_model.pb", "fingerprint.pb", "variables", "assets")))


def check_out(out, cfg, overwrite):
    """True when `out` holds an unfinished run of `cfg` to resume; changes nothing. A finished run (metrics.json)
    or another configuration's is refused unless --overwrite, which a folder of files but no run refuses."""
    if not os.path.exists(out):
        return False
    if not os.path.isdir(out):
        raise UserError(f"--out {out}: exists and is not a folder")
    config, finished = os.path.join(out, "config.json"), os.path.exists(os.path.join(out, "metrics.json"))
    if overwrite:
        if not finished and not os.path.exists(config) and [n for n in os.listdir(out) if n != FolderLock.NAME]:
            raise UserError(f"--overwrite: {out} holds files but no run of mnistcompare-train; nothing deleted")
        return False
    if finished:
        raise UserError(f"--out {out} holds a finished run; choose another folder or pass --overwrite")
    if not os.path.exists(config):
        return False
    try:
        ours = Config.load(config) == cfg
    except UserError as e:  # damaged, or of another version of the package
        raise UserError(f"{e}; the run in {out} cannot be resumed: pass --overwrite to start again") from None
    if not ours:
        raise UserError(f"--out {out} holds an unfinished run of another configuration; choose another folder or "
                        "pass --overwrite")
    return True


# tf.errors raised for files: no permission, full disk, read-only or missing folder
TENSORFLOW_FILE_ERRORS = ("PermissionDeniedError", "ResourceExhaustedError", "FailedPreconditionError")


def one_line(error):
    """An error's text on one line (another library's message, quoted in ours, may hold line breaks)."""
    return " ".join(str(error).split())


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: a run ends as on Ctrl-C (its outputs kept, resumable)."""


def _terminated(signum, frame):
    raise Terminated


def _end_now(signum, frame):
    _exit(143, True)


def _exit(code, whole_process):
    # Not sys.exit for a command: with TensorFlow loaded, the interpreter's shutdown takes 1.5 s, crashed once
    # (SIGSEGV) after an interrupted fit, and printed a traceback after a multi-worker peer died.
    if not whole_process:
        sys.exit(code)
    atexit._run_exitfuncs()  # what Python's exit does first: multiprocessing's releases the pool's semaphores
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run(main, prog, argv, stopped="rerun the same command to resume"):
    """Run a command body: a user's mistake -> one line, exit 2; a failed run -> one line, exit 1; Ctrl-C ->
    130; SIGTERM -> 143 (`stopped`: what to do next). `argv` None: the process ends (`_exit`) whatever the
    outcome; given arguments (a test), it returns or raises SystemExit."""
    whole_process = argv is None
    if whole_process:
        own_process()  # (see runtime.quiet_tensorflow)
    if whole_process and sys.stderr is not None:  # (None: started with stderr closed)
        faulthandler.enable()  # a crash in native code still says where Python was
    # tune's launcher stops its chief and workers with SIGTERM, and says why: they end at once, as on SIGKILL
    # (unwinding, the chief's gRPC thread could print a traceback into the launcher's one line).
    previous = signal.signal(signal.SIGTERM, _end_now if LAUNCHED in os.environ else _terminated)
    shown = warnings.showwarning

    def show_warning(message, category, *args, **kwargs):  # the package's warnings as one line, as its errors
        if not issubclass(category, MnistcompareWarning):
            return shown(message, category, *args, **kwargs)
        print(f"{prog}: warning: {message}", file=sys.stderr, flush=True)
    warnings.showwarning = show_warning
    try:
        main()
        if whole_process:
            _exit(0, True)
    except Terminated:
        print(f"\n{prog}: terminated{'; ' + stopped if stopped else ''}", file=sys.stderr)
        _exit(143, whole_process)
    except (UserError, RunError) as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        _exit(EXIT_USER_ERROR if isinstance(e, UserError) else 1, whole_process)
    except BrokenPipeError:  # the reader of stdout has gone (`| head -1`): quiet, as Python's docs advise
        if whole_process:  # (else stdout is a caller's, perhaps not a file)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _exit(1, whole_process)
    except OSError as e:  # a file the run could not read or write, whichever: one line naming it (exit 1)
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{e.strerror or e}", file=sys.stderr)
        _exit(1, whole_process)
    except Exception as e:
        if type(e).__name__ not in TENSORFLOW_FILE_ERRORS or not type(e).__module__.startswith("tensorflow"):
            raise
        # TensorFlow's own file errors (a SavedModel, an event file): the message's last part names the file
        print(f"{prog}: error: {str(e).strip().splitlines()[-1][:300]}", file=sys.stderr)
        _exit(1, whole_process)
    except KeyboardInterrupt:
        # train resumes from its last finished epoch, evaluate from its last round, tune from its last trial
        print(f"\n{prog}: interrupted{'; ' + stopped if stopped else ''}", file=sys.stderr)
        _exit(130, whole_process)
    finally:
        signal.signal(signal.SIGTERM, previous)
        warnings.showwarning = shown


# -- mnistcompare-train ----------------------------------------------------------
def train_parser():
    parser = Parser(
        prog="mnistcompare-train",
        description="Train one round on the 1000-pair protocol, print the accuracy, "
                    "and write config.json, metrics.json, history.csv, model.keras and saved_model/1/.",
        epilog="example: mnistcompare-train --preset report000-siamese --out runs/demo")
    add_config_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--out", help="output folder (default: runs/<name>-<timestamp>)")
    parser.add_argument("--overwrite", action="store_true", help="replace a run in --out (only its own files)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress output")
    add_tensorboard_argument(parser, "the run's logs (loss and accuracy per epoch, the test curve)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="none",
                        help="tf.distribute strategy: mirrored = all local GPUs; multiworker = several processes or "
                             "machines described by TF_CONFIG, the chief alone writing --out (default: none)")
    parser.add_argument("--xla", action="store_true",
                        help="export a faster SavedModel whose first conv layer is XLA-compiled; where it is "
                             "served, XLA must run (TF Serving: --xla_cpu_compilation_enabled=true). Default: a "
                             "SavedModel that runs wherever TensorFlow does")
    return parser


def train_main(argv=None):
    args = train_parser().parse_args(argv)

    def main():
        cfg = config_from_args(args)
        writes = cluster_role()[3] if args.strategy == "multiworker" else True
        source = data_source(args)
        name = args.preset or cfg.arch
        out = args.out or os.path.join("runs", f"{name}-{time.strftime('%Y%m%d-%H%M%S')}")
        if writes:  # at once, before TensorFlow starts; again under the lock
            check_writable(out)
            check_out(out, cfg, args.overwrite)
            if args.tensorboard:
                check_writable(args.tensorboard, "--tensorboard")
        strategy = start_tensorflow(args.strategy)  # before any op: a multi-worker strategy needs that
        train, test = load_pairs(cfg, source)  # data errors leave no folder behind
        if not writes:  # a multi-worker peer: trains its share, writes nothing
            train_here(cfg, args, train, test, out, strategy, resuming=False, writes=False)
            return
        with run_folder(out):
            resuming = check_out(out, cfg, args.overwrite)
            if args.overwrite:
                clear_run(out, RUN_FILES)
            cfg.save(os.path.join(out, "config.json"))  # marks an unfinished run of this configuration
            train_here(cfg, args, train, test, out, strategy, resuming, writes=True)

    run(main, "mnistcompare-train", argv)


def train_here(cfg, args, train, test, out, strategy, resuming, writes):
    from mnistcompare.callbacks import Checkpoint, HistoryFile
    from mnistcompare.export import export_saved_model
    from mnistcompare.training import as_saved, distributed_model, fit_split, new_model, train_round
    name = args.preset or cfg.arch
    checkpoint = Checkpoint(os.path.join(out, "backup"), write=writes)
    # An epoch's history row before its backup: a run killed in between redoes the epoch and rewrites the row.
    history = HistoryFile(os.path.join(out, "history.csv"))
    callbacks = [history, checkpoint] if writes else [checkpoint]
    if args.tensorboard and writes:
        import keras
        callbacks.append(keras.callbacks.TensorBoard(args.tensorboard, write_graph=False))
    import tensorflow as tf

    fit_pairs = fit_split(cfg, train)[0]
    model = new_model(cfg, fit_pairs) if strategy is None else distributed_model(cfg, strategy, fit_pairs)
    done = checkpoint.restore(model)  # (a peer of a multi-worker run restores the chief's backup too)
    if done and writes:
        history.load(done)  # checked before anything trains
    if done >= cfg.epochs:
        print(f"resuming the unfinished run in {out}/: every epoch of it is trained ({cfg.epochs}), its outputs "
              "not yet written", flush=True)
    elif done:
        print(f"resuming the unfinished run in {out}/ at epoch {done + 1} of {cfg.epochs}", flush=True)
    elif resuming:
        print(f"restarting the unfinished run in {out}/: no epoch of it was finished", flush=True)
    try:
        model, metrics, _ = train_round(cfg, train, test, model=model, initial_epoch=done, callbacks=callbacks,
                                        verbose=0 if args.quiet else 1 if sys.stdout.isatty() else 2,
                                        curves=True, strategy=strategy)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError) as e:
        if args.strategy != "multiworker":
            raise
        raise peer_failure(e) from None
    model = as_saved(model, cfg, fit_pairs)
    if not writes:
        print(f"{name}: worker done (test accuracy {metrics['test_accuracy']:.4f}); the chief writes the outputs")
        return
    with atomic_path(os.path.join(out, "model.keras")) as tmp:
        model.save(tmp)
    export_saved_model(model, cfg, os.path.join(out, SAVED_MODEL), xla=args.xla)
    pictures = draw_run(model, cfg, metrics, test, out, name)
    # Written last: its presence marks a finished run, which needs no backup.
    write_json(os.path.join(out, "metrics.json"), {"name": name, **metrics, "config": cfg.to_dict()})
    checkpoint.clear()

    digits = f", digit accuracy {metrics['test_digit_accuracy']:.4f}" if "test_digit_accuracy" in metrics else ""
    print(f"{name}: test accuracy {metrics['test_accuracy']:.4f}, train accuracy "
          f"{metrics['train_accuracy']:.4f}{digits}; {metrics['params']:,} trainable parameters "
          f"({model.count_params():,} in all); "
          f"{metrics['train_seconds']:.1f} s fit ({metrics['epochs']} epochs)")
    print(f"outputs in {out}/: config.json metrics.json history.csv model.keras saved_model/1/ {' '.join(pictures)}")


def draw_run(model, cfg, metrics, test, out, name):
    """pairs.png and, where the model has digit heads, confusion.png of a trained run; their names."""
    from mnistcompare.plots import plot_confusion, plot_pairs
    from mnistcompare.training import Predictor, examples
    plot_pairs(examples(Predictor.of(model)(test), test), os.path.join(out, "pairs.png"),
               f"{name}, seed {cfg.seed}: test pairs, mistakes first")
    if "confusion" not in metrics:
        return ["pairs.png"]
    plot_confusion(metrics["confusion"], os.path.join(out, "confusion.png"), f"{name}, seed {cfg.seed}")
    return ["pairs.png", "confusion.png"]


# -- mnistcompare-evaluate -------------------------------------------------------
def evaluate_parser():
    parser = Parser(
        prog="mnistcompare-evaluate",
        description="Train many rounds of one or more configurations (round r: seed+r for the pairs and the "
                    "weights) and write results.json, results.md, curves.png and rounds.png. Rerunning the "
                    "same command continues an interrupted evaluation.",
        epilog="examples: mnistcompare-evaluate --arch siamese,two_tower,baseline --rounds 10; "
               "mnistcompare-evaluate --study report000-table1")
    parser.add_argument("--study", help=f"a report's table: {', '.join(STUDIES)}, or all (aliases: "
                                        f"{', '.join(f'{k} = {v}' for k, v in ALIASES.items())}); "
                                        "flags below then apply to every entry")
    parser.add_argument("--rounds", type=int, help="rounds per entry (default: the study's own, else 10)")
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, metavar="N",
                        help="rounds trained side by side, in N worker processes (default: one per usable CPU, "
                             "%(default)s here; use 1 on a GPU); a round's numbers do not depend on it")
    parser.add_argument("--cluster", metavar="ADDRESS",
                        help="send the rounds to the workers of a running Dask scheduler, e.g. tcp://host:8786 "
                             "(pip install 'mnistcompare[cluster]'; workers with --nthreads 1, mnistcompare "
                             "installed and MNIST at the same path); instead of --jobs")
    add_config_arguments(parser)
    add_data_arguments(parser)
    parser.add_argument("--out", help="output folder (default: runs/evaluate-<what>)")
    parser.add_argument("--overwrite", action="store_true", help="start again instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no progress line (done/total, time left)")
    add_tensorboard_argument(parser, "one run per round, DIR/<entry>/round-N")
    return parser


def entries_from_args(args):
    """What to evaluate: [(label, entries, default rounds, Study or None)] from --study (all: every table of
    the reports), --preset P[,Q..] or --arch A[,B..]; validated."""
    if args.study:
        if args.preset or args.config:
            raise UserError("--study: give a study, or --preset/--config, not both")
        changes = explicit_flags(args)
        chosen = {name: study(name) for name in (TABLES if args.study == "all" else (args.study,))}
        return [(name, [Entry(e.name, e.config.replace(**changes).validate(), e.published) for e in s.entries()],
                 s.rounds, s) for name, s in chosen.items()]
    if args.preset:
        names = [n for n in args.preset.split(",") if n]
        return [(",".join(names), [Entry(n, config_from_args(args, preset_name=n)) for n in names], 10, None)]
    archs = [a for a in (args.arch or "siamese").split(",") if a]
    entries = [Entry(a, config_from_args(argparse.Namespace(**{**vars(args), "arch": a}))) for a in archs]
    return [(",".join(archs), entries, 10, None)]


def off_protocol(args, study, rounds):
    """How a study's run differs from its report's protocol ("epochs 3, report 25; rounds 2, report 15"), from
    the flags given, or None. A setting the entries do not share reads "report: varies"."""
    differences = []
    for name, value in explicit_flags(args).items():
        if name == "seed":  # other rounds of the same protocol
            continue
        theirs = {json.dumps(getattr(e.config, name)) for e in study.entries()}
        if theirs != {json.dumps(value)}:
            shown = json.loads(theirs.pop()) if len(theirs) == 1 else "varies"
            differences.append(f"{name.replace('_', '-')} {shown_value(value)}, report {shown_value(shown)}")
    if args.rounds and args.rounds < rounds:
        differences.append(f"rounds {args.rounds}, report {rounds}")
    return "; ".join(differences) or None


def evaluate_main(argv=None):
    args = evaluate_parser().parse_args(argv)

    def main():
        if args.jobs < 1:
            raise UserError(f"--jobs: must be a positive integer, got {args.jobs}")
        plans = entries_from_args(args)
        for _, entries, rounds, _ in plans:  # --rounds, and entries of one name, before anything is written
            check_entries(entries, rounds if args.rounds is None else args.rounds)
        source = data_source(args)
        label = "all" if args.study == "all" else plans[0][0]
        top = args.out or os.path.join("runs", "evaluate-" + label.replace(",", "-"))
        cluster = connect(args.cluster) if args.cluster else None  # first: a refused address writes nothing
        try:
            if args.tensorboard:
                check_writable(args.tensorboard, "--tensorboard")
            make_out(top)
            evaluate_plans(args, plans, source, top, cluster)
        finally:
            if cluster is not None:
                cluster.close()

    run(main, "mnistcompare-evaluate", argv)


def evaluate_plans(args, plans, source, top, cluster):
    for name, entries, rounds, study in plans:
        out = os.path.join(top, name) if len(plans) > 1 else top
        off = off_protocol(args, study, rounds) if study else None
        rounds = args.rounds or rounds
        print(f"{name}: {len(entries)} entries x {rounds} rounds -> {out}/", flush=True)
        if off:
            print(f"{name}: off the report's protocol ({off}): no z and no verdicts on its claims", flush=True)
        tensorboard = args.tensorboard and (os.path.join(args.tensorboard, name) if len(plans) > 1 else
                                            args.tensorboard)
        results = evaluate(entries, rounds, out, source, overwrite=args.overwrite,
                           log=lambda line: print(line, flush=True), jobs=args.jobs, study=study,
                           tensorboard=tensorboard, progress=not args.quiet, cluster=cluster,
                           off_protocol=off)
        print(console_text(markdown_table(results, study), out), end="")
        print(f"outputs in {out}/: results.json results.md curves.png rounds.png", flush=True)
    if args.study == "all":
        summary, _ = tables_summary(top, TABLES)
        write_text(os.path.join(top, "summary.md"), summary)
        print(f"\nAll tables ({top}/summary.md):\n\n{console_text(summary, top)}", end="", flush=True)


# -- mnistcompare-predict --------------------------------------------------------
def predict_parser():
    parser = Parser(
        prog="mnistcompare-predict",
        description="Ask a trained model whether the digit of IMAGE_A is <= the digit of IMAGE_B. Images are PNG, "
                    "JPEG, ... of any size, dark-on-light or light-on-dark, grayscale or colour; they are put in "
                    "MNIST form (white on black, the digit scaled to a 20x20 box and centred by mass in 28x28) "
                    "and pooled to 14x14, as the model was trained.",
        epilog="examples: mnistcompare-predict runs/demo a.png b.png; "
               "mnistcompare-predict runs/demo --pairs pairs.csv --json")
    parser.add_argument("model", metavar="MODEL", help="a run folder of mnistcompare-train, or a SavedModel folder")
    parser.add_argument("images", metavar="IMAGE", nargs="*", help="IMAGE_A IMAGE_B")
    parser.add_argument("--pairs", metavar="FILE.csv", help="many pairs: two image paths per line (relative paths "
                                                             "from the file's folder)")
    parser.add_argument("--json", action="store_true", help="print JSON: one object, or a list with --pairs")
    parser.add_argument("--show", metavar="OUT.png", help="draw each pair as the model sees it, with its answer (the "
                                                          "first 50 pairs of a --pairs file)")
    parser.add_argument("--raw-mnist", action="store_true",
                        help="the images are raw MNIST (28x28, white on black): take them as they are (without it, "
                             "a 28x28 image whose digit is not already 20 pixels and centred is prepared too)")
    return parser


def predict_main(argv=None):
    args = predict_parser().parse_args(argv)

    def main():
        if args.pairs and args.images:
            raise UserError("give IMAGE_A IMAGE_B, or --pairs FILE, not both")
        if not args.pairs and len(args.images) != 2:
            raise UserError(f"expected two images, IMAGE_A IMAGE_B, got {len(args.images)}")
        if args.show and not args.show.lower().endswith(".png"):
            raise UserError(f"--show {args.show}: the picture is a PNG file (OUT.png)")
        if args.show:
            check_writable(os.path.dirname(args.show) or ".", "--show")
        folder = find_saved_model(args.model)
        pairs = (lambda: read_pairs_file(args.pairs)) if args.pairs else (lambda: iter([tuple(args.images)]))
        for path in itertools.chain.from_iterable(pairs()):  # every line and file checked before TensorFlow starts
            check_file(path)

        def read(chunk):  # [N, 28, 28] uint8 images of each side, in MNIST form
            return [np.stack([to_mnist(load_image(path), path, raw=args.raw_mnist) for path in side])
                    for side in zip(*chunk)]
        chunks = batches(pairs(), PREDICT_BATCH)  # PREDICT_BATCH pairs at a time: memory stays the same however
        first = next(chunks)                      # many pairs there are; the first read before TensorFlow starts
        images = read(first)
        quiet_tensorflow()
        import tensorflow as tf
        try:
            model = tf.saved_model.load(folder)
        except Exception as e:  # a damaged file fails in many ways (OpError, IndexError, ...): each is the file's
            raise UserError(f"{folder}: cannot load the SavedModel ({str(e).splitlines()[0][:200]})") from None
        if not hasattr(model, "serve_mnist"):
            raise UserError(f"{folder}: not a SavedModel of mnistcompare (no serve_mnist endpoint)")
        shown = []  # the pairs --show draws: the first SHOW_PAIRS
        listing = args.json and args.pairs
        if listing:
            print("[")
        separator = ""
        for chunk in itertools.chain([first], chunks):
            images_a, images_b = images if chunk is first else read(chunk)
            answers = answer(model, images_a, images_b)
            for (a, b), row, image_a, image_b in zip(chunk, answers, images_a, images_b):
                if args.json:
                    text = json.dumps({"image_a": a, "image_b": b, **row}, indent=2)
                    print(separator + textwrap.indent(text, "  ") if listing else text, end="")
                    separator = ",\n"
                else:
                    print(describe(row, a, b))
                if args.show and len(shown) < SHOW_PAIRS:
                    shown.append(((a, b), row, image_a, image_b))
            sys.stdout.flush()
        if args.json:
            print("\n]" if listing else "")
        if args.show:
            drawn, rows, drawn_a, drawn_b = zip(*shown)
            show(list(drawn), np.stack(drawn_a), np.stack(drawn_b), list(rows), args.show)
            if not args.json:
                print(f"picture in {args.show}" + (f" (the first {SHOW_PAIRS} pairs)" if len(shown) == SHOW_PAIRS
                                                   and args.pairs else ""))

    run(main, "mnistcompare-predict", argv)


if __name__ == "__main__":
    train_main()
