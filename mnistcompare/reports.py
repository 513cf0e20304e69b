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

from mnistcompare.config import Config, UserError


@dataclasses.dataclass
class Entry:
    """One row of a results table: a named Config, and what a report published for it."""
    name: str
    config: Config
    published: dict = None  # test_accuracy, std and, where given, train_accuracy, train_std, params, seconds, source


def published(test, std, source, train=None, train_std=None, params=None, seconds=None, seconds_std=None):
    return {k: v for k, v in dict(test_accuracy=test, std=std, train_accuracy=train, train_std=train_std,
                                  params=params, seconds=seconds, seconds_std=seconds_std, source=source).items()
            if v is not None}


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
        schedule="exponential", lr_decay=0.9, epochs=20, batch_size=5, numerics="torch"),
    # Report 002 transfer learning: a digit classifier (two conv, two dense layers) compared by the
    # exact rule, trained on the digit labels only, swap augmentation throughout, Adam (PyTorch's
    # default rate 0.001), batch 100.
    "report002-transfer": dict(
        arch="digits", channels=(32, 64), kernel=(3,), pool=(2, 2), hidden=(200,), head=(20, 20),
        batch_norm=False, dropout=0.0, alpha=0.0, lr=0.001, swap=True, numerics="torch"),
    # Report 003 direct classification: classify both digits, compare them; 800/200 train/validation,
    # early stopping (patience 20) within 100 epochs, Adam 3e-4, no dropout.
    "report003-direct": dict(
        arch="digits", channels=(32, 64), kernel=(3,), pool=(2, 2), hidden=(128,), batch_norm=False,
        dropout=0.0, alpha=0.0, lr=3e-4, epochs=100, val_split=0.2, patience=20, numerics="torch"),
    # Report 004 Table III, CNN + auxiliary loss: conv 16 and 20 (kernel 5, padding 3) with batch-norm,
    # 500 -> 300 -> 10 per digit, the two digit outputs -> comparison; losses summed; Adam 5e-4; l2.
    "report004-cnn-aux": dict(
        arch="siamese", channels=(16, 20), kernel=(5,), padding=("3",), pool=(2,), conv_batch_norm=True,
        hidden=(300,), head=(), batch_norm=False, dropout=0.0, alpha=1 / 3, lr=5e-4, l2=1e-3, numerics="torch"),
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


# -- studies --------------------------------------------------------------------
# Report 001 Table I with its initial values: BC 4, K 3, KL 1, HL 64, LeakyReLU, dropout 0.2, 20 epochs,
# batch 5, Adam 0.001 decayed 0.9 per epoch, sigmoid + BCE.
R001_CNN = dict(channels=(4, 8), kernel=(3,), pool=(2, 1), conv_dropout=0.2, hidden=(64,), head=(64,),
                activation="leaky_relu", batch_norm=False, dropout=0.2, lr=0.001, schedule="exponential",
                lr_decay=0.9, epochs=20, batch_size=5, numerics="torch")
R001_FCN = dict(R001_CNN, channels=())


def study_sharing_aux():
    """Report 001 Table II: weight sharing x auxiliary loss, CNN and FCN towers."""
    entries = []
    for tower, base, scores in (("CNN", R001_CNN, (0.833, 0.158, 0.882, 0.011, 0.864, 0.006, 0.902, 0.013)),
                                ("FCN", R001_FCN, (0.828, 0.006, 0.870, 0.007, 0.851, 0.008, 0.892, 0.006))):
        cells = (("two_tower", 1.0, "no sharing, no aux"), ("two_tower", 0.5, "no sharing, aux"),
                 ("siamese", 1.0, "sharing, no aux"), ("siamese", 0.5, "sharing, aux"))
        for i, (arch, alpha, label) in enumerate(cells):
            entries.append(Entry(f"{tower}: {label}", Config(arch=arch, alpha=alpha, **base),
                                 published(scores[2 * i], scores[2 * i + 1], "001 Table II")))
    return entries


def study_bn_dropout():
    """Report 002 Table 1: no sharing; sharing; + aux; + batch-norm; + dropout; transfer learning."""
    rows = (("no sharing", dict(arch="two_tower", alpha=1.0), (0.8074, 0.0089)),
            ("sharing", dict(arch="siamese", alpha=1.0), (0.7790, 0.0152)),
            ("sharing, aux", dict(arch="siamese", alpha=0.5), (0.8373, 0.0220)),
            ("sharing, aux, BN", dict(arch="siamese", alpha=0.5, batch_norm=True), (0.8476, 0.0142)),
            ("sharing, aux, BN, dropout", dict(arch="siamese", alpha=0.5, batch_norm=True, dropout=0.25),
             (0.8474, 0.0115)),
            ("transfer learning (digits)", dict(arch="digits", alpha=0.0), (0.9686, 0.0067)))
    base = preset("report002-transfer")
    return [Entry(name, base.replace(**changes), published(*score, "002 Table 1")) for name, changes, score in rows]


def study_combine():
    """Report 000 section IV-D: concatenate, subtract or max the two tower outputs."""
    return [Entry(f"siamese, {c}", preset("report000-siamese").replace(combine=c)) for c in
            ("concat", "difference", "max")]


def study_reports():
    """Each report's headline model with that report's own hyper-parameters."""
    return [
        Entry("000 siamese", preset("report000-siamese"), published(0.948, 0.010, "000 Table I")),
        Entry("001 tuned CNN", preset("report001-cnn"), published(0.9721, None, "001 Table IV")),
        Entry("002 transfer learning", preset("report002-transfer"), published(0.9686, 0.0067, "002 Table 1")),
        Entry("003 direct classification", preset("report003-direct"), published(0.965, 0.007, "003 Table 1")),
        Entry("004 CNN + aux", preset("report004-cnn-aux"), published(0.887, 0.041, "004 Table IV")),
    ]


@dataclasses.dataclass(frozen=True)
class Study:
    entries: object  # () -> [Entry]
    rounds: int  # the report's own number of rounds: evaluate's default
    about: str


STUDIES = {
    "report001-table2": Study(study_sharing_aux, 10, "weight sharing x auxiliary loss, CNN and FCN (001 Table II)"),
    "report002-table1": Study(study_bn_dropout, 10, "sharing, aux, batch-norm, dropout, transfer (002 Table 1)"),
    "combine": Study(study_combine, 10, "concatenate, subtract or max the tower outputs (000 section IV-D)"),
    "reports": Study(study_reports, 10, "each report's headline model"),
}
ALIASES = {"sharing-aux": "report001-table2", "bn-dropout": "report002-table1"}


def study(name):
    """The named Study (aliases allowed)."""
    name = ALIASES.get(name, name)
    if name not in STUDIES:
        raise UserError(f"--study: unknown study {name!r}; choose from {', '.join([*STUDIES, 'all', *ALIASES])}")
    return STUDIES[name]
