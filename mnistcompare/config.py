"""One configuration object per run: architecture, training and data options.

The command-line programs, the presets, the experiments and the tuner all
build a `Config`; it is saved as `config.json` beside every result and can be
read back with `Config.load`, so any run can be repeated.
"""
import contextlib
import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass, field, fields

ARCHS = ("baseline", "mlp", "siamese", "two_tower", "siamese_mlp", "digits")
# Architectures whose model has the auxiliary outputs digit_a / digit_b.
DIGIT_ARCHS = ("siamese", "two_tower", "siamese_mlp", "digits")
COMBINES = ("concat", "difference", "max")
ACTIVATIONS = ("relu", "leaky_relu", "elu", "gelu")
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "exponential")
PADDINGS = ("valid", "same")
# Pairs each MNIST split can give (two images per pair).
MAX_PAIRS = {"train": 30000, "test": 5000}


class UserError(Exception):
    """A mistake of the user's (bad option, missing data): one line, exit 2."""


def _opt(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class Config:
    # What to build. Defaults are report 000's siamese net (its Appendix A).
    arch: str = _opt("siamese", "architecture: " + ", ".join(ARCHS))
    channels: tuple = _opt((16, 32, 64), "conv channels, one per conv layer (none: a dense tower; ignored by mlp, siamese_mlp)")
    kernel: tuple = _opt((3, 2, 2), "conv kernel sizes, one per conv layer or one for all")
    padding: tuple = _opt(("valid",), "conv padding (valid, same, or N zero pixels), one per conv layer or one for all")
    pool: tuple = _opt((2, 2, 1), "max-pool size after each conv layer (1: none), or one for all")
    groups: int = _opt(1, "groups of the first conv of `baseline` (2: one group per image)")
    conv_batch_norm: bool = _opt(False, "batch-norm after each conv layer")
    conv_dropout: float = _opt(0.0, "dropout after each conv block")
    hidden: tuple = _opt((75, 75), "hidden units of the tower's dense layers (of the whole net for baseline/mlp)")
    head: tuple = _opt((50, 10), "hidden units of the comparison head after the towers combine")
    activation: str = _opt("relu", "activation: " + ", ".join(ACTIVATIONS))
    batch_norm: bool = _opt(True, "batch-norm after each hidden dense layer")
    dropout: float = _opt(0.25, "dropout after each hidden dense layer")
    l2: float = _opt(0.0, "l2 penalty on every kernel")
    combine: str = _opt("concat", "how the two tower outputs meet: " + ", ".join(COMBINES))
    members: int = _opt(1, "digits only: independent towers whose digit probabilities are averaged (an ensemble "
                           "inside one model)")
    alpha: float = _opt(1 / 3, "loss = alpha*compare + (1-alpha)/2*(digit_a+digit_b); 1 = no auxiliary loss")
    # How to train.
    optimizer: str = _opt("adam", "optimizer: " + ", ".join(OPTIMIZERS))
    lr: float = _opt(0.005, "learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(False, "SGD with Nesterov momentum")
    schedule: str = _opt("constant", "learning-rate schedule: " + ", ".join(SCHEDULES))
    lr_decay: float = _opt(0.9, "learning-rate factor per epoch of the exponential schedule")
    epochs: int = _opt(25, "training epochs")
    batch_size: int = _opt(100, "mini-batch size")
    val_split: float = _opt(0.0, "fraction of the training pairs held out for validation (report 003: 0.2)")
    patience: int = _opt(0, "early-stopping patience on validation accuracy in epochs (0: off; needs --val-split)")
    # Which data.
    pairs: int = _opt(1000, f"training pairs (at most {MAX_PAIRS['train']})")
    test_pairs: int = _opt(0, f"test pairs (at most {MAX_PAIRS['test']}; 0: as many as --pairs, up to that)")
    seed: int = _opt(0, "seed of the pair sample, the weights and the shuffling")
    swap: bool = _opt(False, "augment: swap the two images of a training pair at random (target recomputed)")
    shift: int = _opt(0, "augment: random shift of each training image by up to this many pixels")
    rotate: float = _opt(0.0, "augment: random rotation of each training image by up to this many degrees")
    zoom: float = _opt(0.0, "augment: random scaling of each training image by up to this fraction (0.1: 0.9-1.1)")

    def __post_init__(self):
        for f in fields(self):
            if f.type is tuple and isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))

    def per_conv(self, name):
        """`kernel`, `padding` or `pool` expanded to one value per conv layer."""
        values = getattr(self, name)
        return values * len(self.channels) if len(values) == 1 else values

    @property
    def has_conv(self):
        """A conv stack in the tower(s); siamese/two_tower/digits with no channels have dense towers."""
        return bool(self.channels) and self.arch not in ("mlp", "siamese_mlp")

    @property
    def n_test_pairs(self):
        return self.test_pairs or min(self.pairs, MAX_PAIRS["test"])

    @property
    def has_digits(self):
        return self.arch in DIGIT_ARCHS

    def validate(self):
        """Raise UserError naming the first bad option; return self."""
        def bad(name, why):
            raise UserError(f"--{name.replace('_', '-')}: {why}")

        for f in fields(self):
            value = getattr(self, f.name)
            kind = f.type
            ok = (isinstance(value, tuple) if kind is tuple else
                  isinstance(value, bool) if kind is bool else
                  isinstance(value, int) and not isinstance(value, bool) if kind is int else
                  isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
                  isinstance(value, str))
            if not ok:
                bad(f.name, f"expected {kind.__name__}, got {value!r}")
            if kind is float and not math.isfinite(value):
                bad(f.name, f"must be a finite number, got {value!r}")
        for name, allowed in (("arch", ARCHS), ("combine", COMBINES), ("activation", ACTIVATIONS),
                              ("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                bad(name, f"unknown value {getattr(self, name)!r}; choose from {', '.join(allowed)}")
        for name in ("channels", "kernel", "pool", "hidden", "head"):  # may be empty
            values = getattr(self, name)
            if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
                bad(name, f"expected positive integers, got {','.join(map(str, values)) or 'nothing'}")
        if self.arch == "baseline" and not self.channels:
            bad("channels", "baseline needs at least one conv layer")
        for name in ("kernel", "padding", "pool"):
            if self.has_conv and len(getattr(self, name)) not in (1, len(self.channels)):
                bad(name, f"give one value or one per conv layer ({len(self.channels)})")
        if not all(isinstance(p, str) and (p in PADDINGS or p.isdigit()) for p in self.padding):
            bad("padding", f"expected {', '.join(PADDINGS)} or a number of pixels, got "
                f"{','.join(map(str, self.padding))}")
        if self.has_conv or self.arch == "baseline":
            size = 14
            for i, (k, p, pool) in enumerate(zip(self.per_conv("kernel"), self.per_conv("padding"),
                                                 self.per_conv("pool"))):
                size = size if p == "same" else size + 2 * (int(p) if p.isdigit() else 0) - k + 1
                size = size // pool if size > 0 else 0
                if size < 1:
                    bad("channels", f"the conv stack shrinks the 14x14 image to nothing at conv layer {i + 1}; "
                        "use fewer layers, smaller --kernel or --pool, or --padding same")
        if self.members < 1 or (self.members > 1 and self.arch != "digits"):
            bad("members", "must be 1, or more with --arch digits")
        if not 0 <= self.rotate <= 180 or not 0 <= self.zoom < 1:
            bad("rotate" if not 0 <= self.rotate <= 180 else "zoom", "must be in [0, 180] degrees / [0, 1)")
        if self.groups < 1 or (self.arch == "baseline" and self.groups not in (1, 2)):
            bad("groups", "must be 1 or 2")
        if not 0 <= self.alpha <= 1:
            bad("alpha", f"must be in [0, 1], got {self.alpha}")
        for name in ("dropout", "conv_dropout"):
            if not 0 <= getattr(self, name) < 1:
                bad(name, f"must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.val_split < 1:
            bad("val_split", f"must be in [0, 1), got {self.val_split}")
        for name in ("lr",):
            if getattr(self, name) <= 0:
                bad(name, f"must be > 0, got {getattr(self, name)}")
        if not 0 < self.lr_decay <= 1:
            bad("lr_decay", f"must be in (0, 1], got {self.lr_decay}")
        for name in ("l2", "momentum"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        for name in ("epochs", "batch_size", "pairs"):
            if getattr(self, name) <= 0:
                bad(name, f"must be a positive integer, got {getattr(self, name)}")
        for name in ("patience", "shift", "seed", "test_pairs"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.patience and not self.val_split:
            bad("patience", "early stopping needs validation pairs: add --val-split (e.g. 0.2)")
        if self.pairs > MAX_PAIRS["train"]:
            bad("pairs", f"at most {MAX_PAIRS['train']} (MNIST train has 60,000 images), got {self.pairs}")
        if self.n_test_pairs > MAX_PAIRS["test"]:
            bad("test_pairs", f"at most {MAX_PAIRS['test']} (MNIST test has 10,000 images), got {self.n_test_pairs}")
        if self.val_split and round(self.pairs * self.val_split) < 1:
            bad("val_split", "holds out no pair; raise --val-split or --pairs")
        return self

    # -- files ---------------------------------------------------------------
    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, source="config"):
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object of options")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{source}: unknown option(s) {', '.join(unknown)}")
        return cls(**data)

    def save(self, path):
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise UserError(f"config file {path} is not valid JSON: {e}") from None
        # A metrics/results file saved beside a run keeps its config under "config".
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


# Named configurations: each report's model with that report's own settings.
PRESETS = {
    # Report 000, Appendix A, Fig. A1: 2-channel CNN, compare head only.
    "report000-baseline": dict(
        arch="baseline", channels=(32, 64, 128), kernel=(3, 3, 2), padding=("valid", "same", "valid"),
        pool=(2, 2, 1), groups=2, hidden=(50, 50, 25), batch_norm=False, dropout=0.0, lr=0.0025),
    # Report 000, Appendix A, Fig. A2: shared tower + digit heads + compare head, equal loss weights.
    "report000-siamese": dict(
        arch="siamese", channels=(16, 32, 64), kernel=(3, 2, 2), padding=("valid",), pool=(2, 2, 1),
        hidden=(75, 75), head=(50, 10), batch_norm=True, dropout=0.25, combine="concat",
        alpha=1 / 3, lr=0.005),
    # Report 001 Table IV, the tuned CNN: BC 24, K 3, KL 2, HL 512, C-KL 2, C-HL 512, alpha 0.44,
    # LeakyReLU, dropout 0.2, Adam 0.001 decayed 0.9 per epoch, 20 epochs, batch 5.
    "report001-cnn": dict(
        arch="siamese", channels=(24, 48), kernel=(3,), pool=(2, 1), conv_dropout=0.2, hidden=(512, 512),
        head=(512, 512), activation="leaky_relu", batch_norm=False, dropout=0.2, alpha=0.44, lr=0.001,
        schedule="exponential", lr_decay=0.9, epochs=20, batch_size=5),
    # Report 002 transfer learning: a digit classifier (two conv, two dense layers) compared by the
    # exact rule, trained on the digit labels only, swap augmentation throughout.
    "report002-transfer": dict(
        arch="digits", channels=(32, 64), kernel=(3,), pool=(2, 2), hidden=(200,), head=(20, 20),
        batch_norm=False, dropout=0.0, alpha=0.0, lr=0.001, swap=True),
    # Report 003 direct classification: classify both digits, compare them; 800/200 train/validation,
    # early stopping (patience 20) within 100 epochs, Adam 3e-4, no dropout.
    "report003-direct": dict(
        arch="digits", channels=(32, 64), kernel=(3,), pool=(2, 2), hidden=(128,), batch_norm=False,
        dropout=0.0, alpha=0.0, lr=3e-4, epochs=100, val_split=0.2, patience=20),
    # Report 004 Table III, CNN + auxiliary loss: conv 16 and 20 (kernel 5, padding 3) with batch-norm,
    # 500 -> 300 -> 10 per digit, the two digit outputs -> comparison; losses summed; Adam 5e-4; l2.
    "report004-cnn-aux": dict(
        arch="siamese", channels=(16, 20), kernel=(5,), padding=("3",), pool=(2,), conv_batch_norm=True,
        hidden=(300,), head=(), batch_norm=False, dropout=0.0, alpha=1 / 3, lr=5e-4, l2=1e-3),
    # Beyond the reports, on the same 1000 training pairs and their digit labels only: three wider
    # batch-normalised digit classifiers averaged inside one model, read through the exact rule
    # P(a <= b), trained jointly on the comparison and both digits; swap and small affine
    # augmentation; 60 epochs on a cosine schedule.
    "best": dict(
        arch="digits", members=3, channels=(32, 64, 128), kernel=(3,), padding=("same",), pool=(2, 2, 1),
        conv_batch_norm=True, hidden=(256,), batch_norm=True, dropout=0.3, alpha=1 / 3, lr=0.003,
        schedule="cosine", epochs=60, swap=True, shift=1, rotate=10.0, zoom=0.1),
}


def preset(name):
    if name not in PRESETS:
        raise UserError(f"--preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return Config(**PRESETS[name])


def write_json(path, data):
    """Write JSON atomically: a reader never sees half a file."""
    write_text(path, json.dumps(data, indent=2) + "\n")


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path beside `path` that replaces it on success: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-",
                               suffix=os.path.splitext(path)[1])
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs get the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
