"""The five reports as data: their models as presets, their tables as studies.

A preset is a named Config: one report's model with that report's own
settings (`mnistcompare-train --preset NAME`). A study is one table of a
report: its entries (a Config each, with the report's own hyper-parameters)
and the numbers the report published for them (`mnistcompare-evaluate
--study NAME`). Where a report does not state a setting, PyTorch's default
stands in (the reports were written in PyTorch), and so do PyTorch's
numerics (`numerics="torch"`); each choice is commented where it is made.
"""
import dataclasses

from mnistcompare.config import Config
from mnistcompare.errors import UserError


@dataclasses.dataclass
class Entry:
    """One row of a results table: a named Config, and what a report published for it."""
    name: str
    config: Config
    published: dict = None  # test_accuracy, std and, where given, train_accuracy, train_std, params, seconds, source


def published(test, std, source, train=None, train_std=None, params=None, seconds=None, seconds_std=None,
              rounds=None, params_note=None):
    """A report's figures for one row; `rounds` its number of rounds (for the strict test), `params_note`
    why our parameter count differs, read from the report's layer description."""
    return {k: v for k, v in dict(test_accuracy=test, std=std, train_accuracy=train, train_std=train_std,
                                  params=params, seconds=seconds, seconds_std=seconds_std, rounds=rounds,
                                  params_note=params_note, source=source).items()
            if v is not None}


@dataclasses.dataclass(frozen=True)
class Panel:
    """One plot of a report's figure: `series` ((history key, label), ...) over epochs for each of `entries`
    (names; () for all), mean with a min/max band over the rounds."""
    series: tuple
    ylabel: str
    entries: tuple = ()
    title: str = ""
    log: bool = False  # a log scale for the values
    # the loss as the sum of its three terms, as report 004 plots it: an entry whose terms weigh 1/3 each
    # (alpha 1/3, the l2 penalty divided by 3 with them) has its loss tripled
    summed: bool = False


@dataclasses.dataclass(frozen=True)
class Figure:
    """A report's figure, redrawn from our rounds as `file` on the study's page. No panels: drawn by
    plots.plot_rounds (rounds.png)."""
    number: str  # the report's own, e.g. "Fig. 2"
    title: str
    panels: tuple = ()

    @property
    def file(self):
        return "rounds.png" if not self.panels else \
            "fig-" + "".join(c for c in self.number.lower().replace("fig.", "") if c.isalnum()) + ".png"


# -- presets --------------------------------------------------------------------
# Report 000 (Appendix A, Table I): Adam, batch 100, 25 epochs, cross-entropy on two logits, 15 rounds.
R000 = dict(numerics="torch", output="softmax2", batch_size=100, epochs=25)
R000_SIAMESE = dict(R000, arch="siamese", channels=(16, 32, 64), kernel=(3, 2, 2), padding=("valid",),
                    pool=(2, 2, 1), hidden=(75, 75), head=(50, 10), batch_norm=True, dropout=0.25,
                    combine="concat", alpha=1 / 3, lr=0.005)
R000_BASELINE = dict(R000, arch="baseline", channels=(32, 64, 128), kernel=(3, 3, 2), padding=("valid", "same", "valid"),
                     pool=(2, 2, 1), groups=2, hidden=(50, 50, 25), batch_norm=False, dropout=0.0, lr=0.0025)

PRESETS = {
    # Report 000, Appendix A, Fig. A1: 2-channel CNN (grouped first conv), compare head only.
    "report000-baseline": R000_BASELINE,
    # Report 000, Appendix A, Fig. A2: shared tower + digit heads + compare head, equal loss weights.
    "report000-siamese": R000_SIAMESE,
    # Report 001 Table IV, the tuned CNN: BC 24, K 3, KL 2, HL 512, C-KL 2, C-HL 512, alpha 0.44,
    # LeakyReLU, dropout 0.2, Adam 0.001 decayed 0.9 per epoch, 20 epochs, batch 5, sigmoid + BCE.
    "report001-cnn": dict(
        arch="siamese", channels=(24, 48), kernel=(3,), pool=(2, 1), conv_dropout=0.2, hidden=(512, 512),
        head=(512, 512), activation="leaky_relu", batch_norm=False, dropout=0.2, alpha=0.44, lr=0.001,
        schedule="exponential", lr_decay=0.9, epochs=20, batch_size=5, numerics="torch", normalize=False),
    # Report 002 transfer learning: a digit classifier (two conv, two dense layers) compared by the
    # exact rule, trained on the digit labels only, its training set "doubled by swapping ... and flipping
    # the targets ... throughout", Adam (PyTorch's default rate 0.001), batch 100.
    "report002-transfer": dict(
        arch="digits", channels=(32, 64), kernel=(3,), pool=(2, 2), hidden=(200,), head=(20, 20),
        batch_norm=False, dropout=0.0, alpha=0.0, lr=0.001, double=True, numerics="torch"),
    # Report 003 direct classification: classify both digits, compare them; 800/200 train/validation,
    # early stopping (patience 20) within 100 epochs, Adam 3e-4, no dropout.
    "report003-direct": dict(
        arch="digits", channels=(32, 64), kernel=(3,), pool=(2, 2), hidden=(128,), batch_norm=False,
        dropout=0.0, alpha=0.0, lr=3e-4, epochs=100, val_split=0.2, patience=20, numerics="torch"),
    # Report 004 Table III, CNN + auxiliary loss: conv 16 and 20 (kernel 5, padding 3) with batch-norm,
    # 500 -> 300 -> 10 per digit, the two digit outputs -> comparison (two logits, ReLU); the three losses
    # summed (alpha 1/3, so l2 0.1 / 3: see study_report004_table4); Adam 5e-4; raw pixels.
    "report004-cnn-aux": dict(
        arch="siamese", channels=(16, 20), kernel=(5,), padding=("3",), pool=(2,), conv_batch_norm=True,
        hidden=(300,), head=(), batch_norm=False, dropout=0.0, alpha=1 / 3, lr=5e-4, l2=0.1 / 3, numerics="torch",
        output="relu-softmax2", normalize=False),
    # Beyond the reports, on the same 1000 training pairs and their digit labels only: three wider
    # batch-normalised digit classifiers averaged inside one model, read through the exact rule
    # P(a <= b), trained jointly on the comparison and both digits; swap and small affine
    # augmentation; 60 epochs on a cosine schedule. Two 3x3 convs at 14x14 and at 7x7, and at inference
    # each digit read in 9 views (itself, its one-pixel shifts, rotated 8 degrees and scaled 8 % both ways),
    # both chosen on validation pairs (docs/results/best/README.md).
    "best": dict(
        arch="digits", members=3, channels=(32, 32, 64, 64, 128), kernel=(3,), padding=("same",),
        pool=(1, 2, 1, 2, 1), conv_batch_norm=True, hidden=(256,), batch_norm=True,
        dropout=0.3, alpha=1 / 3, lr=0.003, schedule="cosine", epochs=60, swap=True, shift=1, rotate=10.0,
        zoom=0.1, tta=True, tta_rotate=8.0, tta_zoom=0.08),
}


def preset(name):
    if name not in PRESETS:
        raise UserError(f"--preset: unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return Config(**PRESETS[name])


# -- studies --------------------------------------------------------------------
def study_report000_table1():
    """Report 000 Table I: baseline, non-siamese, siamese; 25 epochs, batch 100, Adam, 15 rounds. Its parameter
    counts name the nets: Appendix A's baseline (81,239), two towers of 32-64-128 channels (117,516, section
    V), and a siamese net of 64-128-256 (192,601), not Appendix A's 16-32-64 (23,833, `report000-siamese`)."""
    source = "000 Table I"
    return [
        Entry("Baseline", Config(**R000_BASELINE),
              published(0.827, 0.013, source, 0.999, 0.001, params=81239, seconds=4.05, rounds=15)),
        Entry("Non-siamese", Config(**dict(R000_SIAMESE, arch="two_tower", channels=(32, 64, 128), lr=0.0025)),
              published(0.918, 0.016, source, 0.987, 0.009, params=117516, seconds=8.84, rounds=15)),
        Entry("Siamese", Config(**dict(R000_SIAMESE, channels=(64, 128, 256))),
              published(0.948, 0.010, source, 0.991, 0.005, params=192601, seconds=7.59, rounds=15)),
    ]


# Report 001 Table I with its initial values (section IV-A): BC 4, K 3, KL 1, HL 64, LeakyReLU, dropout 0.2
# after every layer but the last of a sub-net, 20 epochs, batch 5, Adam 0.001 decayed 0.9 per epoch,
# sigmoid + BCE, alpha 1/2. The sub-nets' 10-unit outputs are joined by the layers its grid search calls
# C-KL and C-HL, at KL and HL's initial values (1 layer of 64 units, built as the sub-nets' layers). The
# report never normalises the pixels: raw 0..255, as the course's data comes.
R001_CNN = dict(channels=(4, 8), kernel=(3,), pool=(2, 1), conv_dropout=0.2, hidden=(64,), head=(64,),
                activation="leaky_relu", batch_norm=False, dropout=0.2, lr=0.001, schedule="exponential",
                lr_decay=0.9, epochs=20, batch_size=5, numerics="torch", normalize=False)
R001_FCN = dict(R001_CNN, channels=())


def study_report001_table2():
    """Report 001 Table II: weight sharing x auxiliary loss, CNN and FCN sub-nets; 10 rounds."""
    entries = []
    for tower, base, scores in (("CNN", R001_CNN, (0.833, 0.158, 0.882, 0.011, 0.864, 0.006, 0.902, 0.013)),
                                ("FCN", R001_FCN, (0.828, 0.006, 0.870, 0.007, 0.851, 0.008, 0.892, 0.006))):
        cells = (("two_tower", 1.0, "no sharing, no aux"), ("two_tower", 0.5, "no sharing, aux"),
                 ("siamese", 1.0, "sharing, no aux"), ("siamese", 0.5, "sharing, aux"))
        for i, (arch, alpha, label) in enumerate(cells):
            entries.append(Entry(f"{tower}: {label}", Config(arch=arch, alpha=alpha, **base),
                                 published(scores[2 * i], scores[2 * i + 1], "001 Table II", rounds=10)))
    # Section III-B's Basic Net, the table's baseline: one hidden layer of 512 units and an output layer
    entries.append(Entry("Basic Net", Config(arch="mlp", **dict(R001_FCN, hidden=(512,))),
                         published(0.714, 0.014, "001 section III-B")))
    return entries


R002_ROWS = ("no sharing", "sharing", "sharing, aux", "sharing, aux, BN", "sharing, aux, BN, dropout",
             "transfer learning")  # report 002's Table 1, in its order (the variants after them are not in it)


def study_report002_table1():
    """Report 002 Table 1: no sharing; sharing; + aux; + batch-norm; + dropout; transfer learning; 10 rounds;
    then the siamese rows with logits into the comparison part, a variant the report does not describe. As its
    text states (the study's assumptions say how each setting was read).
    """
    # L = L_cmp + 0.5 L_rec: alpha 1/2. Batch-norm in the siamese rows only, which alone ablate it.
    siamese = dict(head=(20, 20), head_activation="linear", head_input="probs")
    bn = dict(siamese, arch="siamese", alpha=0.5, conv_batch_norm=True)
    # The counts, read against the layers: every row counts BatchNorm2d(32) and BatchNorm2d(64) (192), used
    # or not, and each siamese digit classifier 20 more, the size of a BatchNorm1d(10) (its gamma and beta)
    # on the 10 outputs, which the report does not describe (so not built; the transfer net has none).
    unused_bn = "192, its BatchNorm2d(32) and (64), counted though unused"
    extra = "20, a BatchNorm1d(10) (γ, β) per digit classifier, not described"
    rows = ((R002_ROWS[0], dict(siamese, arch="two_tower", alpha=1.0), (0.8074, 0.0089, 145737),
             f"two classifiers, each {unused_bn}, and {extra}"),
            ("sharing", dict(siamese, arch="siamese", alpha=1.0), (0.7790, 0.0152, 73299), f"{unused_bn}; {extra}"),
            ("sharing, aux", dict(siamese, arch="siamese", alpha=0.5), (0.8373, 0.0220, 73299),
             f"{unused_bn}; {extra}"),
            ("sharing, aux, BN", bn, (0.8476, 0.0142, 73299), extra),
            ("sharing, aux, BN, dropout", dict(bn, dropout=0.5), (0.8474, 0.0115, 73299), extra),
            ("transfer learning", dict(arch="digits", alpha=0.0), (0.9686, 0.0067, 72418), unused_bn))
    base = preset("report002-transfer")
    entries = [Entry(name, base.replace(**changes), published(test, std, "002 Table 1", params=params, rounds=10,
                                                              params_note=note))
               for name, changes, (test, std, params), note in rows]
    # The variant: the comparison part given the digit classifiers' logits (what PyTorch's CrossEntropyLoss
    # takes) instead of their probabilities. Not the report's text; no figure of the report to score it by.
    return entries + [Entry(f"{name}; logits", base.replace(**dict(changes, head_input="logits")))
                      for name, changes, _, _ in rows[:-1]]


# Report 003: a feature module of two conv layers (max-pooling, ReLU) shared by all seven models, Adam 3e-4,
# 100 epochs, early stopping after 20 epochs without a better validation accuracy (800/200 split), sigmoid +
# BCE (with logits), cross-entropy for the digits, dropout after the linear layers. Not stated, so: the
# module 32 and 64 channels of 3x3 kernels, linear layers of 128 units (the size the report gives its
# auxiliary model), dropout at PyTorch's default rate 0.5, batch 100 (its other reports' and course's size).
R003 = dict(channels=(32, 64), kernel=(3,), pool=(2, 2), batch_norm=False, dropout=0.0, lr=3e-4, epochs=100,
            val_split=0.2, patience=20, numerics="torch", batch_size=100)


def study_report003_table1():
    """Report 003 Table 1: seven models, each without and with dropout (14 cells); 10 rounds."""
    models = (
        # the two images as two channels, three linear layers
        ("TwoChannelsModel", dict(arch="baseline", hidden=(128, 128)), (0.798, 0.011, 0.798, 0.011)),
        # each image through its own module and three linear layers; the prediction from their difference
        ("TwoBranchesModel", dict(arch="two_tower", hidden=(128, 128), combine="difference", head=(), alpha=1.0),
         (0.812, 0.013, 0.826, 0.018)),
        ("WeightSharingBranchesModel", dict(arch="siamese", hidden=(128, 128), combine="difference", head=(),
                                            alpha=1.0), (0.838, 0.012, 0.840, 0.008)),
        # two linear layers to 10 values per image, concatenated, then linear layers
        ("BranchesToVecModel", dict(arch="two_tower", hidden=(128,), head=(128,), alpha=1.0),
         (0.827, 0.012, 0.831, 0.017)),
        ("WeightSharingBranchesToVecModel", dict(arch="siamese", hidden=(128,), head=(128,), alpha=1.0),
         (0.847, 0.018, 0.846, 0.010)),
        # weight sharing, the two 128-d features concatenated and reduced to 100, from which both the
        # prediction and the two digits are read; both digits' cross-entropy added (three terms: alpha 1/3)
        ("WeightSharingAuxiliaryModel", dict(arch="siamese", hidden=(128,), head=(100,), head_input="features",
                                             alpha=1 / 3),
         (0.865, 0.019, 0.863, 0.012)),
        # classify both digits, compare them
        ("DirectClassificationModel", dict(arch="digits", hidden=(128,), alpha=0.0), (0.965, 0.007, 0.953, 0.010)),
    )
    entries = []
    for name, changes, (mean, std, drop_mean, drop_std) in models:
        for dropout, score in ((0.0, (mean, std)), (0.5, (drop_mean, drop_std))):
            entries.append(Entry(f"{name}{', dropout' if dropout else ''}", Config(**{**R003, **changes,
                                                                                    "dropout": dropout}),
                                 published(*score, "003 Table 1", rounds=10)))
    return entries


# Report 004 Tables II-III: 25 epochs, batch 100, Adam, cross-entropy on two logits that pass a ReLU (its
# tables end the net with "Fully Connected -> 2, ReLU"), l2 0.1, 20 rounds, raw pixels (it never
# mentions normalising them). The nets without the auxiliary loss end in two linear layers 128 -> 10 -> 2
# (300 -> 10 -> 2 for the CNN), built as the tables give them (bottleneck 10). With the auxiliary loss the net
# runs on each image and the two 10-way digit outputs meet in the final linear layer; the loss is the sum of
# the three terms: our loss is that sum divided by 3 (alpha = 1/3), so l2 is divided by 3 too (the same
# optimum; Adam ignores the scale).
R004 = dict(numerics="torch", output="relu-softmax2", epochs=25, batch_size=100, head=(), normalize=False)
R004_FC = dict(R004, hidden=(200, 256), batch_norm=True, dense_pool=2, dropout=0.5, lr=1e-3)
R004_CNN = dict(R004, channels=(16, 20), kernel=(5,), padding=("3",), pool=(2,), conv_batch_norm=True, hidden=(300,),
                batch_norm=False, dropout=0.0, lr=5e-4)


def study_report004_table4():
    """Report 004 Table IV: Baseline, Baseline + Aux, CNN, CNN + Aux; train and test error, time per round."""
    source = "004 Table IV"
    return [
        Entry("Baseline", Config(**R004_FC, arch="mlp", l2=0.1, bottleneck=10),
              published(0.750, 0.012, source, 0.913, 0.020, seconds=5.8, seconds_std=0.15, rounds=20)),
        Entry("Baseline + Aux", Config(**R004_FC, arch="siamese_mlp", alpha=1 / 3, l2=0.1 / 3),
              published(0.894, 0.005, source, 0.912, 0.007, seconds=10.8, seconds_std=0.4, rounds=20)),
        Entry("CNN", Config(**R004_CNN, arch="baseline", l2=0.1, bottleneck=10),
              published(0.761, 0.0119, source, 0.841, 0.116, seconds=10.5, seconds_std=0.9, rounds=20)),
        Entry("CNN + Aux", Config(**R004_CNN, arch="siamese", alpha=1 / 3, l2=0.1 / 3),
              published(0.887, 0.041, source, 0.912, 0.048, seconds=21.4, seconds_std=0.9, rounds=20)),
    ]


def study_report000_normalisation():
    """Report 000 section II-B: Table I's three nets with and without standardised pixels; 15 rounds. The
    report gives no table of it (Table I's cells are scored in its own study)."""
    return [Entry(f"{entry.name}{', raw pixels' if raw else ''}", entry.config.replace(normalize=not raw))
            for entry in study_report000_table1() for raw in (False, True)]


def study_combine():
    """Report 000 section IV-D: concatenate, subtract or max the two tower outputs."""
    return [Entry(f"siamese, {c}", preset("report000-siamese").replace(combine=c)) for c in
            ("concat", "difference", "max")]


def study_reports():
    """Each report's headline model with that report's own hyper-parameters."""
    return [
        Entry("000 siamese (Appendix A)", preset("report000-siamese"), published(0.948, 0.010, "000 Table I", rounds=15)),
        Entry("001 tuned CNN", preset("report001-cnn"), published(0.9721, None, "001 Table IV")),
        Entry("002 transfer learning", preset("report002-transfer"), published(0.9686, 0.0067, "002 Table 1", rounds=10)),
        Entry("003 direct classification", preset("report003-direct"), published(0.965, 0.007, "003 Table 1", rounds=10)),
        Entry("004 CNN + aux", preset("report004-cnn-aux"), published(0.887, 0.041, "004 Table IV", rounds=20)),
    ]


@dataclasses.dataclass(frozen=True)
class Claim:
    """An effect a report claims, as comparisons of its cells (by entry name)."""
    text: str
    better: tuple = ()  # (a, b): a's test accuracy above b's
    similar: tuple = ()  # (a, b): within one standard deviation of each other
    faster: tuple = ()  # (a, b): a's median fit time below b's
    drop: tuple = ()  # (a, b, amount): b's test accuracy below a's by amount, within 0.05


@dataclasses.dataclass(frozen=True)
class Study:
    entries: object  # () -> [Entry]
    rounds: int  # the report's own number of rounds: evaluate's default
    about: str
    claims: tuple = ()
    errors: bool = False  # show errors in % rather than accuracies (as report 004 does)
    figures: tuple = ()  # the report's figures of this table, redrawn (Figure)
    assumptions: tuple = ()  # what the package chose where the report is silent


def _both(pairs):
    """(a, b) pairs for each of the CNN and FCN towers of report 001's table."""
    return tuple((f"{tower}: {a}", f"{tower}: {b}") for tower in ("CNN", "FCN") for a, b in pairs)


R003_MODELS = ("TwoChannelsModel", "TwoBranchesModel", "WeightSharingBranchesModel", "BranchesToVecModel",
               "WeightSharingBranchesToVecModel", "WeightSharingAuxiliaryModel", "DirectClassificationModel")
CLAIMS = {
    "report000-table1": (
        Claim("the siamese net beats the non-siamese net, which beats the baseline",
              better=(("Siamese", "Non-siamese"), ("Non-siamese", "Baseline"))),
        Claim("weight sharing reduces training time: the siamese net trains faster than the non-siamese net",
              faster=(("Siamese", "Non-siamese"),)),
        Claim("the baseline is the fastest to train", faster=(("Baseline", "Siamese"), ("Baseline", "Non-siamese"))),
    ),
    "report000-normalisation": tuple(
        Claim(f"without normalising, the {net.lower()} net's accuracy drops by around 15 %",
              drop=((net, f"{net}, raw pixels", 0.15),)) for net in ("Baseline", "Non-siamese", "Siamese")),
    "report001-table2": (
        Claim("every sub-net beats the Basic Net", better=tuple((f"{t}: {c}", "Basic Net") for t in ("CNN", "FCN")
                                                                for c in ("no sharing, no aux", "sharing, aux"))),
        Claim("the auxiliary loss helps, with and without weight sharing, for both sub-nets",
              better=_both((("no sharing, aux", "no sharing, no aux"), ("sharing, aux", "sharing, no aux")))),
        Claim("weight sharing helps, with and without the auxiliary loss, for both sub-nets",
              better=_both((("sharing, no aux", "no sharing, no aux"), ("sharing, aux", "no sharing, aux")))),
        Claim("the CNN sub-net beats the FCN with both", better=(("CNN: sharing, aux", "FCN: sharing, aux"),)),
    ),
    "report002-table1": (
        Claim("transfer learning beats every siamese net",
              better=tuple(("transfer learning", n) for n in ("no sharing", "sharing", "sharing, aux",
                                                              "sharing, aux, BN", "sharing, aux, BN, dropout"))),
        Claim("without the auxiliary loss, no sharing beats sharing (its Table 1: 0.807 vs 0.779)",
              better=(("no sharing", "sharing"),)),
        Claim("the auxiliary loss helps", better=(("sharing, aux", "sharing"),)),
        Claim("batch normalisation helps", better=(("sharing, aux, BN", "sharing, aux"),)),
        Claim("dropout on top of batch normalisation changes little",
              similar=(("sharing, aux, BN, dropout", "sharing, aux, BN"),)),
    ),
    "report003-table1": (
        Claim("direct classification is the best model, with and without dropout",
              better=tuple(("DirectClassificationModel", m) for m in R003_MODELS[:-1])),
        Claim("weight sharing helps", better=(("WeightSharingBranchesModel", "TwoBranchesModel"),
                                              ("WeightSharingBranchesToVecModel", "BranchesToVecModel"))),
        Claim("the auxiliary losses help",
              better=(("WeightSharingAuxiliaryModel", "WeightSharingBranchesToVecModel"),)),
        Claim("separate branches beat two channels", better=(("TwoBranchesModel", "TwoChannelsModel"),)),
        Claim("dropout changes little", similar=tuple((f"{m}, dropout", m) for m in R003_MODELS)),
    ),
    "report004-table4": (
        Claim("the auxiliary loss yields much better test results",
              better=(("Baseline + Aux", "Baseline"), ("CNN + Aux", "CNN"))),
        Claim("the CNN is longer to train than the baseline", faster=(("Baseline", "CNN"),
                                                                      ("Baseline + Aux", "CNN + Aux"))),
        Claim("the auxiliary loss makes training longer", faster=(("Baseline", "Baseline + Aux"), ("CNN", "CNN + Aux"))),
    ),
}


def _curves(number, entry, what):
    """Report 000's figures: one net's accuracy (train and test) or loss (total on the training pairs,
    the comparison's on the test pairs) over epochs."""
    if what == "accuracy":
        panel = Panel((("compare_accuracy", "train"), ("test_accuracy", "test")), "accuracy", (entry,))
    else:
        panel = Panel((("loss", "train, total loss"), ("test_compare_loss", "test, comparison loss")), "loss", (entry,))
    return Figure(number, f"{what.capitalize()} of the {entry.lower()} net over epochs", (panel,))


R000_FIGURES = (_curves("Fig. 2", "Siamese", "accuracy"), _curves("Fig. 3", "Siamese", "loss"),
                _curves("Fig. B1", "Baseline", "accuracy"), _curves("Fig. B3", "Baseline", "loss"),
                _curves("Fig. B2", "Non-siamese", "accuracy"), _curves("Fig. B4", "Non-siamese", "loss"))
PYTORCH_DEFAULTS = ("Where a report is silent on them, PyTorch's defaults: weight initialisation, BatchNorm's "
                    "momentum 0.1 and ε 1e-5, Adam's β and ε (`numerics=\"torch\"`, see docs/numerics.md).")
TIMES = ("Times: the report's seconds are PyTorch's on its machine, ours Keras' on two shared cores; they are "
         "compared as ratios between the table's rows.")
STUDIES = {
    "report000-table1": Study(
        study_report000_table1, 15, "baseline, non-siamese, siamese (000 Table I)", CLAIMS["report000-table1"],
        figures=R000_FIGURES, assumptions=(
            "The siamese net of Table I has 64-128-256 channels, read from its 192,601 parameters (Appendix A "
            "draws 16-32-64: 23,833).",
            "The nets with digit heads weight the three losses equally (the report's 'equal weights'), as their "
            "mean (α = 1/3): the curves' total loss is a third of the sum.",
            "Train accuracy: the trained net on its 1000 training pairs, in inference mode (the report does not "
            "say how it measured it).",
            PYTORCH_DEFAULTS, TIMES)),
    "report000-normalisation": Study(
        study_report000_normalisation, 15, "Table I's nets without standardised pixels (000 section II-B)",
        CLAIMS["report000-normalisation"], assumptions=(
            "Standardised: minus the training pairs' pixel mean, over their standard deviation (the report's "
            "Tensor.mean() and Tensor.std()); raw: the pixels as MNIST stores them, 0 to 255.",
            "The report gives no table: 'the accuracy of all the networks drops rapidly by around 15 % each', "
            "read as 15 points of test accuracy, checked to within 5.",
            PYTORCH_DEFAULTS)),
    "report001-table2": Study(
        study_report001_table2, 10, "weight sharing x auxiliary loss, CNN and FCN; the Basic Net (001 Table II)",
        CLAIMS["report001-table2"], assumptions=(
            "The sub-nets' 10-unit outputs meet in the layers its search calls C-KL and C-HL, here at KL and HL's "
            "initial values: one layer of 64 units, built as the sub-nets' layers.",
            "Dropout 0.2 after every layer but a sub-net's last, the Basic Net's hidden layer included.",
            "Raw pixels, 0 to 255: the report never mentions normalising them.",
            "The Basic Net's rounds are not given: its cell is scored by z only.",
            "The report draws no curves: its figures are the nets' diagrams.",
            PYTORCH_DEFAULTS)),
    "report002-table1": Study(
        study_report002_table1, 10, "sharing, aux, batch-norm, dropout, transfer learning (002 Table 1)",
        CLAIMS["report002-table1"],
        figures=(Figure("Fig. 2", "Train loss (the comparison's only) and test accuracy", (
            Panel((("compare_loss", ""),), "comparison loss on the training pairs", R002_ROWS, title="train loss"),
            Panel((("test_accuracy", ""),), "test accuracy", R002_ROWS, title="test accuracy"))),),
        assumptions=(
            "The digit classifier: conv 32 and 64 (3x3, max-pool 2), dense 200 and 10 (the report: two convs, "
            "two dense layers; the widths fit its transfer net's 72,418 parameters with its two BatchNorm2d).",
            "The comparison part: three linear layers 20 → 20 → 20 → 1, no activation between them (the report: "
            "'a linearly separable problem'), sigmoid and binary cross-entropy, on the digit classifiers' "
            "probabilities, as the report says ('all the 10 digits probabilities'; --head-input probs). The rows "
            "'…; logits' give it their logits instead, which the report does not describe: an earlier release "
            "of this package built the table so, because it scored closer to the report's figures.",
            "The training set doubled, as the report says ('used throughout'): each epoch has every pair and its "
            "swap with the target flipped (--double), so a tie (a = b) reads 1 as it is and 0 swapped; an "
            "earlier release swapped each pair with probability ½ per batch and recomputed the target instead.",
            "Batch-norm after the two convolutions in the BN rows (from the counts: see each row's parameters).",
            "25 epochs (none stated); dropout at PyTorch's 0.5 after the dense layers.",
            PYTORCH_DEFAULTS)),
    "report003-table1": Study(
        study_report003_table1, 10, "seven models, without and with dropout (003 Table 1)",
        CLAIMS["report003-table1"],
        figures=(Figure("Fig. 2", "Validation accuracies history without and with dropout", (
            Panel((("val_compare_accuracy", ""),), "validation accuracy", R003_MODELS, "without dropout"),
            Panel((("val_compare_accuracy", ""),), "validation accuracy", tuple(f"{m}, dropout" for m in R003_MODELS),
                  "with dropout"))),),
        assumptions=(
            "The feature module: two convolutions of 32 and 64 channels (3x3, each max-pooled by 2, ReLU); "
            "linear layers of 128 units (the size the report gives its auxiliary model).",
            "Dropout at PyTorch's 0.5 after the linear layers; batch 100 (the course's size).",
            "The validation pairs: 200 of the 1000, the other 800 trained on; the test score is the epoch of the "
            "best validation accuracy's weights.",
            PYTORCH_DEFAULTS)),
    "report004-table4": Study(
        study_report004_table4, 20, "FC and CNN, without and with aux (004 Table IV)", CLAIMS["report004-table4"],
        errors=True, figures=(
            Figure("Fig. 1", "Evolution of the training losses",
                   (Panel((("loss", ""),), "training loss with ℓ2 (with aux: the sum of the three terms)",
                          log=True, summed=True),)),
            Figure("Fig. 2", "Errors and times across rounds")),
        assumptions=(
            "ℓ2 0.1 on the kernels (weights, not biases), added to the loss; with the auxiliary loss the three "
            "terms' mean (α = 1/3), so ℓ2 ÷ 3 too: the same optimum.",
            "Raw pixels, 0 to 255: the report never mentions normalising them.",
            PYTORCH_DEFAULTS, TIMES)),
    "combine": Study(study_combine, 10, "concatenate, subtract or max the tower outputs (000 section IV-D)"),
    "reports": Study(study_reports, 10, "each report's headline model"),
}
TABLES = tuple(name for name in STUDIES if name.startswith("report0"))  # what --study all runs
ALIASES = {"sharing-aux": "report001-table2", "bn-dropout": "report002-table1"}


def study(name):
    """The named Study (aliases allowed)."""
    name = ALIASES.get(name, name)
    if name not in STUDIES:
        raise UserError(f"--study: unknown study {name!r}; choose from {', '.join([*STUDIES, 'all', *ALIASES])}")
    return STUDIES[name]
