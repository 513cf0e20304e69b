"""One configuration object per run, and the one description of each architecture.

The commands, presets, studies, experiments and the tuner all build a `Config`, saved as `config.json`
beside every result (`Config.load` reads it back). Each option's bounds live beside its field and drive
both `validate` and `--help`. Nothing here imports TensorFlow.
"""
import dataclasses
import json
import math
import os
import re
import warnings
from dataclasses import dataclass, field, fields

from mnistcompare.errors import MnistcompareWarning, UserError
from mnistcompare.files import write_json


@dataclass(frozen=True)
class Arch:
    """What the rest of the package needs to know of an architecture; its builder is
    `mnistcompare.models.<builder>` (resolved there, so that this module needs no Keras)."""
    name: str
    builder: str
    digits: bool  # outputs digit_a / digit_b, trained by the auxiliary loss
    conv: str  # its tower or net: "always" a conv stack, "optional" (a dense tower without --channels), "never"
    about: str


ARCHS = {a.name: a for a in (
    Arch("baseline", "build_baseline", False, "always",
         "both images as 2 channels of one CNN, compare head only (000 Fig. A1, 003 TwoChannels, 004 CNN)"),
    Arch("mlp", "build_mlp", False, "never", "dense layers on the 392 pixels (001 Basic Net, 004 Baseline)"),
    Arch("siamese", "build_siamese", True, "optional",
         "ONE tower called on both images (shared weights), digit heads, compare head (000 Fig. A2, 001 CNN)"),
    Arch("two_tower", "build_two_tower", True, "optional",
         "the same with two separate towers: no weight sharing (000 non-siamese, 003 TwoBranches)"),
    Arch("siamese_mlp", "build_siamese", True, "never", "siamese with a dense tower (001 FCN, 004 Baseline + Aux)"),
    Arch("digits", "build_digits", True, "optional",
         "shared digit classifier, compare = P(a <= b) computed exactly (002 transfer learning, 003 direct)"),
)}
DIGIT_ARCHS = tuple(name for name, a in ARCHS.items() if a.digits)
PADDINGS = ("valid", "same")
# PyTorch's defaults that differ from Keras' (the reports were written in PyTorch); --numerics picks them.
TORCH_PARTS = {
    "kernel-init": "kernel init uniform +-1/sqrt(fan_in) (PyTorch's kaiming_uniform_(a=sqrt(5))), not glorot_uniform",
    "bias-init": "bias init uniform +-1/sqrt(fan_in), not zeros",
    "bn-eps": "BatchNorm epsilon 1e-5, not 1e-3",
    "adam-eps": "Adam epsilon 1e-8, not 1e-7",
    "slope": "LeakyReLU negative slope 0.01 (nn.LeakyReLU()), not 0.2",
    "apart": "a shared tower runs on each image apart, as PyTorch code calls the module twice (BatchNorm statistics "
             "per image batch, two updates per step), not once on both images stacked",
}
OUTPUTS = {
    "sigmoid": "Dense(1) + sigmoid, binary cross-entropy",
    "softmax2": "Dense(2) + softmax, cross-entropy (PyTorch's Linear(k, 2) + CrossEntropyLoss)",
    "relu-softmax2": "Dense(2), ReLU, softmax (report 004's final Linear + ReLU)",
}
# Options of earlier releases (tried for `best`, docs/best.md) and their "off" value: a config holding them loads.
REMOVED = {"member_loss": "ensemble", "label_smoothing": 0.0, "lr_floor": 0.0, "ema": 0.0, "elastic": 0.0, "erase": 0}
# Pairs each MNIST split can give (two images per pair).
MAX_PAIRS = {"train": 30000, "test": 5000}
MAX_SEED = 2 ** 32 - 1  # numpy's and Keras' seeds are 32-bit


def _opt(default, help, choices=None, low=None, high=None, low_open=False, high_open=False):
    """A Config field: its help, and the choices or [low, high] bounds (open where said) its value must meet."""
    return field(default=default, metadata=dict(help=help, choices=choices, low=low, high=high,
                                                low_open=low_open, high_open=high_open))


def bounds_text(f):
    """How a field's bounds read in --help and in errors: 'in [0, 1)', '>= 1', 'one of a, b'."""
    m = f.metadata
    if m["choices"]:
        return "one of " + ", ".join(map(str, m["choices"]))
    low, high = (v if v is None or isinstance(v, int) else f"{v:g}" for v in (m["low"], m["high"]))
    if low is not None and high is not None:
        return f"in {'(' if m['low_open'] else '['}{low}, {high}{')' if m['high_open'] else ']'}"
    if low is not None:
        return f"{'>' if m['low_open'] else '>='} {low}"
    if high is not None:
        return f"{'<' if m['high_open'] else '<='} {high}"
    return ""


# Config's fields by concern, each group named by its first field (--help shows them so).
SECTIONS = {"arch": "architecture", "conv_batch_norm": "regularisation", "alpha": "loss and numerics",
            "tta": "test-time views", "optimizer": "training", "pairs": "data", "swap": "augmentation"}


@dataclass
class Config:
    """Everything that defines a run: the model, its training, its data; saved as config.json.

    Defaults: report 000's siamese net with Keras' numerics (`reports.preset(name)` gives each report's).
    Build with keyword arguments, `Config.load(path)` or `replace(**changes)`; `validate()` names the first
    bad option. Each field's help and bounds are in its `metadata` (what --help shows).
    """
    # -- architecture
    arch: str = _opt("siamese", "architecture", choices=tuple(ARCHS))
    channels: tuple = _opt((16, 32, 64), "conv channels, one per conv layer (none: a dense tower; ignored by mlp, "
                                         "siamese_mlp)", low=1, high=4096)
    kernel: tuple = _opt((3, 2, 2), "conv kernel sizes, one per conv layer or one for all", low=1, high=28)
    padding: tuple = _opt(("valid",), "conv padding (valid, same, or N zero pixels), one per conv layer or one for all")
    pool: tuple = _opt((2, 2, 1), "max-pool size after each conv layer (1: none), or one for all", low=1, high=14)
    groups: int = _opt(1, "groups of the first conv of `baseline` (2: one group per image)", choices=(1, 2))
    hidden: tuple = _opt((75, 75), "hidden units of the tower's dense layers (of the whole net for baseline/mlp)",
                         low=1, high=65536)
    head: tuple = _opt((50, 10), "hidden units of the comparison head after the towers combine", low=1, high=65536)
    head_activation: str = _opt("same", "activation of the comparison head's hidden layers: same (as --activation), "
                                        "or linear (none: report 002's 'three linear layers')",
                                choices=("same", "linear", "relu", "leaky_relu", "elu", "gelu"))
    head_input: str = _opt("logits", "what of each tower the comparison head sees: its digit logits, their "
                                     "softmax probabilities (report 002), or its last hidden features, the digit "
                                     "outputs then read from the head's last layer (report 003's auxiliary model)",
                           choices=("logits", "probs", "features"))
    activation: str = _opt("relu", "activation of the hidden layers", choices=("relu", "leaky_relu", "elu", "gelu"))
    combine: str = _opt("concat", "how the two tower outputs meet", choices=("concat", "difference", "max"))
    output: str = _opt("sigmoid", "the comparison output: " + "; ".join(f"{k}: {v}" for k, v in OUTPUTS.items()),
                       choices=tuple(OUTPUTS))
    members: int = _opt(1, "independent towers whose digit probabilities are averaged, an ensemble inside one model "
                           "(digits only)", low=1, high=64)
    bottleneck: int = _opt(0, "a linear layer of this many units before the comparison output (baseline and mlp: "
                              "report 004's 128 -> 10 -> 2; 0: none)", low=0, high=65536)
    dense_pool: int = _opt(1, "max-pool over units after each hidden dense layer (report 004's MaxPool1d: 2)", low=1)
    # -- regularisation
    conv_batch_norm: bool = _opt(False, "batch-norm after each conv layer")
    conv_dropout: float = _opt(0.0, "dropout after each conv block", low=0, high=1, high_open=True)
    batch_norm: bool = _opt(True, "batch-norm after each hidden dense layer")
    dropout: float = _opt(0.25, "dropout after each hidden dense layer", low=0, high=1, high_open=True)
    l2: float = _opt(0.0, "l2 penalty on every kernel", low=0)
    # -- loss and numerics
    alpha: float = _opt(1 / 3, "the comparison loss's weight: loss = alpha*compare + "
                               "(1-alpha)/2*(digit_a+digit_b); 1 = no auxiliary loss", low=0, high=1)
    numerics: str = _opt("keras", "which framework's defaults the numerics follow: keras (Keras' defaults), "
                                  "torch (all of PyTorch's, as the reports used), or one of PyTorch's alone: "
                                  + "; ".join(f"{k}: {v}" for k, v in TORCH_PARTS.items()),
                         choices=("keras", "torch", *TORCH_PARTS))
    normalize: bool = _opt(True, "standardise the pixels with the training pixels' mean and std, kept in the model "
                                 "(--no-normalize: raw 0..255 pixels, as reports 001 and 004, which do not normalise)")
    # -- test-time views
    tta: bool = _opt(False, "at inference, average each image's digit probabilities with those of its four "
                            "one-pixel shifts (digits only; part of the model and of its export)")
    # without --tta they are left unused, so that `--preset best --no-tta` reads each image once
    tta_rotate: float = _opt(0.0, "with --tta, also the views rotated by this many degrees, both ways (unused "
                                  "without --tta)", low=0, high=180)
    tta_zoom: float = _opt(0.0, "with --tta, also the views scaled by 1 +- this fraction (0.08: 1.08 and 0.92; "
                                "unused without --tta)", low=0, high=1, high_open=True)
    # -- training
    optimizer: str = _opt("adam", "optimizer", choices=("adam", "sgd"))
    lr: float = _opt(0.005, "learning rate", low=0, low_open=True)
    momentum: float = _opt(0.9, "SGD momentum", low=0)
    nesterov: bool = _opt(False, "SGD with Nesterov momentum")
    schedule: str = _opt("constant", "learning-rate schedule", choices=("constant", "cosine", "exponential"))
    lr_decay: float = _opt(0.9, "learning-rate factor per epoch of the exponential schedule", low=0, high=1,
                           low_open=True)
    epochs: int = _opt(25, "training epochs", low=1)
    batch_size: int = _opt(100, "mini-batch size", low=1)
    shuffle: bool = _opt(True, "shuffle the training pairs every epoch (the reports' loops, like PyTorch's DataLoader "
                               "by default, do not)")
    val_split: float = _opt(0.0, "fraction of the training pairs held out for validation (report 003: 0.2)",
                            low=0, high=1, high_open=True)
    patience: int = _opt(0, "early-stopping patience on validation accuracy in epochs (0: off; needs --val-split)",
                         low=0)
    # -- data
    pairs: int = _opt(1000, "training pairs", low=1, high=MAX_PAIRS["train"])
    test_pairs: int = _opt(0, "test pairs (0: as many as --pairs, up to 5000)", low=0, high=MAX_PAIRS["test"])
    seed: int = _opt(0, "seed of the pair sample, the weights and the shuffling", low=0, high=MAX_SEED)
    # -- augmentation
    swap: bool = _opt(False, "swap the two images of a training pair at random (target recomputed)")
    double: bool = _opt(False, "each training pair twice an epoch, as it is and swapped with its target flipped (a tie "
                               "then reads 0): report 002's doubled training set")
    shift: int = _opt(0, "random shift of each training image by up to this many pixels", low=0, high=7)
    rotate: float = _opt(0.0, "random rotation of each training image by up to this many degrees", low=0, high=180)
    zoom: float = _opt(0.0, "random scaling of each training image by up to this fraction (0.1: 0.9-1.1)",
                       low=0, high=1, high_open=True)

    def __post_init__(self):
        for f in fields(self):
            if f.type is tuple and isinstance(getattr(self, f.name), list):
                setattr(self, f.name, tuple(getattr(self, f.name)))

    # -- derived ---------------------------------------------------------------
    @property
    def spec(self):
        return ARCHS[self.arch]

    @property
    def has_digits(self):
        return self.spec.digits

    @property
    def has_conv(self):
        """A conv stack in the tower(s) or net."""
        return self.spec.conv == "always" or (self.spec.conv == "optional" and bool(self.channels))

    @property
    def n_test_pairs(self):
        return self.test_pairs or min(self.pairs, MAX_PAIRS["test"])

    @property
    def torch_parts(self):
        """The PyTorch defaults this config uses instead of Keras' (a subset of TORCH_PARTS)."""
        parts = TORCH_PARTS if self.numerics == "torch" else () if self.numerics == "keras" else [self.numerics]
        return frozenset(parts)

    def per_conv(self, name):
        """`kernel`, `padding` or `pool` expanded to one value per conv layer."""
        values = getattr(self, name)
        return values * len(self.channels) if len(values) == 1 else values

    # -- checks ----------------------------------------------------------------
    def validate(self):
        """Raise UserError naming the first bad option; return self."""
        def bad(name, why):
            raise UserError(f"--{name.replace('_', '-')}: {why}")

        def short(value):  # a value as errors show it: at most 60 characters, however long it is
            text = repr(value)
            return text if len(text) <= 60 else f"{text[:45]}... ({len(text):,} characters)"

        for f in fields(self):
            value = getattr(self, f.name)
            items = value if f.type is tuple else (value,)
            kind = int if f.type is tuple and f.name != "padding" else str if f.name == "padding" else f.type
            if f.type is tuple and not isinstance(value, tuple):
                bad(f.name, f"expected a list, got {short(value)}")
            for v in items:
                ok = (isinstance(v, bool) if kind is bool else
                      isinstance(v, int) and not isinstance(v, bool) if kind is int else
                      isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      if kind is float else isinstance(v, str))
                if not ok:
                    bad(f.name, f"expected {'a finite number' if kind is float else kind.__name__}, got {short(v)}")
                m = f.metadata
                if (m["choices"] and v not in m["choices"]) or (
                        m["low"] is not None and (v < m["low"] or (m["low_open"] and v == m["low"]))) or (
                        m["high"] is not None and (v > m["high"] or (m["high_open"] and v == m["high"]))):
                    shown = short(",".join(map(str, value))).strip("'") if f.type is tuple else short(v)
                    bad(f.name, f"must be {bounds_text(f)}, got {shown}")
        if not all(p in PADDINGS or re.fullmatch(r"[0-9]{1,2}", p) for p in self.padding):
            bad("padding", f"expected {', '.join(PADDINGS)} or a number of pixels, got {','.join(self.padding)}")
        if self.spec.conv == "always" and not self.channels:
            bad("channels", f"{self.arch} needs at least one conv layer")
        if self.has_conv:
            for name in ("kernel", "padding", "pool"):
                if len(getattr(self, name)) not in (1, len(self.channels)):
                    bad(name, f"give one value or one per conv layer ({len(self.channels)})")
            size = 14
            for i, (k, p, pool) in enumerate(zip(self.per_conv("kernel"), self.per_conv("padding"),
                                                 self.per_conv("pool"))):
                size = size if p == "same" else size + 2 * (0 if p == "valid" else int(p)) - k + 1
                size = size // pool if size > 0 else 0
                if size < 1:
                    bad("channels", f"the conv stack shrinks the 14x14 image to nothing at conv layer {i + 1}; "
                        "use fewer layers, smaller --kernel or --pool, or --padding same")
        held_out = round(self.pairs * self.val_split)
        for broken, name, why in (  # the options that go together, in the order they are checked
                (self.members > 1 and self.arch != "digits", "members", "more than 1 only with --arch digits"),
                (self.tta and self.arch != "digits", "tta", "only with --arch digits"),
                (self.head_input != "logits" and self.arch not in ("siamese", "two_tower"), "head_input",
                 "only with --arch siamese or two_tower (the nets with a comparison head)"),
                (self.head_input == "features" and not (self.hidden and self.head), "head_input", "features needs "
                 "--hidden and --head layers (the features, and the head's last layer the digits are read from)"),
                (self.bottleneck and self.arch not in ("baseline", "mlp"), "bottleneck",
                 "only with --arch baseline or mlp (the other nets end in their digit heads)"),
                (self.double and self.swap, "double", "not with --swap: the doubled set holds every swap already"),
                (self.groups > 1 and self.arch != "baseline", "groups", "more than 1 only with --arch baseline"),
                (self.patience and not self.val_split, "patience",
                 "early stopping needs validation pairs: add --val-split (e.g. 0.2)"),
                (self.val_split and held_out < 1, "val_split", "holds out no pair; raise --val-split or --pairs"),
                (self.val_split and self.pairs - held_out < 1, "val_split",
                 "leaves no training pair; lower --val-split or raise --pairs"),
                (self.dense_pool > 1 and any(units % self.dense_pool for units in self.hidden + self.head),
                 "dense_pool", f"every --hidden and --head size must be a multiple of {self.dense_pool}"),
                (self.n_test_pairs > MAX_PAIRS["test"], "test_pairs",
                 f"at most {MAX_PAIRS['test']} (MNIST test has 10,000 images), got {self.n_test_pairs}")):
            if broken:
                bad(name, why)
        return self

    # -- files -----------------------------------------------------------------
    def to_dict(self):
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, source="config"):
        if not isinstance(data, dict):
            raise UserError(f"{source}: expected a JSON object of options")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - set(REMOVED))
        if unknown:
            raise UserError(f"{source}: unknown option(s) {', '.join(map(str, unknown))}")
        used = [f"{name} {data[name]!r}" for name in REMOVED if name in data and data[name] != REMOVED[name]]
        if used:
            warnings.warn(f"{source}: option(s) no longer in mnistcompare, ignored: {', '.join(used)}; this run "
                          "trains without them (docs/best.md)", MnistcompareWarning, stacklevel=2)
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path):
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        try:
            with open(path) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise UserError(f"config file not found: {path}") from None
        except IsADirectoryError:  # (a run's folder: its config.json is meant)
            raise UserError(f"config file {path} is a folder: give a file, e.g. {os.path.join(path, 'config.json')}") \
                from None
        except OSError as e:
            raise UserError(f"cannot read config file {path}: {e.strerror or e}") from None
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise UserError(f"config file {path} is not valid JSON: {str(e)[:200]}") from None
        # A metrics/results file saved beside a run keeps its config under "config".
        if isinstance(data, dict) and isinstance(data.get("config"), dict):
            data = data["config"]
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def without_views(self):
        """The same model without test-time views: the same weights, each image read once."""
        return self.replace(tta=False, tta_rotate=0.0, tta_zoom=0.0)


def shown_value(value):
    """A value as tables and messages show it: a list joined by commas, a float in %g."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else f"{value:g}" \
        if isinstance(value, float) else str(value)


def sections():
    """{group name: [its fields]}, in Config's order."""
    groups, current = {}, None
    for f in fields(Config):
        current = SECTIONS.get(f.name, current)
        groups.setdefault(current, []).append(f)
    return groups


ASIDE = re.compile(r" \(|; |: ")  # the docstring gives each field's help up to its first aside: what it is for
Config.__doc__ += "".join(f"\n    {name.capitalize()}:\n" + "".join(
    f"        {f.name}: {ASIDE.split(f.metadata['help'], maxsplit=1)[0]}\n" for f in group)
    for name, group in sections().items())
