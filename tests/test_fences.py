"""Every private member of another library the package relies on (docs/layout.md lists them, with why), checked
to be what the package expects: on a release that changes one, its test fails with one line naming it."""
import atexit
import inspect

import pytest

KERAS_TUNER = [  # (class, member, where the package uses it)
    ("Oracle", "_get_oracle_fname", "tuning/search.py Resumable.save writes oracle.json whole"),
    ("Oracle", "_save_trial", "tuning/search.py Resumable overrides it to write trial.json whole"),
    ("Oracle", "_get_trial_dir", "tuning/search.py reads each trial's rounds.json beside its trial.json"),
    ("Oracle", "_compute_values_hash", "tuning/search.py Resumable.set_state lists trials a killed chief started"),
    ("GridSearchOracle", "_compare", "tuning/search.py GridOracle.set_state orders the grid on reload "
                                     "(keras-tuner#1055)"),
    ("GridSearchOracle", "_populate_next", "tuning/search.py GridOracle.set_state (keras-tuner#1055)"),
    ("GridSearchOracle", "_ordered_ids", "tuning/search.py GridOracle.set_state (keras-tuner#1055)"),
    ("Tuner", "_is_worker", "tuning/search.py ComparisonTuner.save: only the chief saves the oracle"),
    ("Tuner", "_get_tuner_fname", "tuning/search.py ComparisonTuner.save writes the tuner's file whole"),
]


def _keras_tuner_object(name, member):
    import keras_tuner

    cls = getattr(keras_tuner.oracles, name, None) or getattr(keras_tuner, name)
    if member in ("_populate_next", "_ordered_ids"):  # set in __init__
        hps = keras_tuner.HyperParameters()
        hps.Choice("a", [1, 2])
        return cls(objective=keras_tuner.Objective("x", "max"), hyperparameters=hps)
    return cls


@pytest.mark.parametrize("name, member, where", KERAS_TUNER, ids=[f"{c}.{m}" for c, m, _ in KERAS_TUNER])
def test_keras_tuners_private_members_are_there(name, member, where):
    import keras_tuner

    assert hasattr(_keras_tuner_object(name, member), member), \
        f"keras-tuner {keras_tuner.__version__} has no {name}.{member}: {where}"


def test_keras_tuners_oracle_state_has_the_fields_resuming_rewrites():
    import keras_tuner

    from mnistcompare.tuning.search import make_oracle

    state = make_oracle("grid", {"alpha": [0.3, 0.6]}).get_state()
    wanted = {"ongoing_trials", "retry_queue", "start_order", "tried_so_far", "id_to_hash"}
    assert wanted <= set(state), f"keras-tuner {keras_tuner.__version__}'s Oracle.get_state() lacks " \
                                 f"{sorted(wanted - set(state))}: tuning/search.py Resumable.set_state rewrites them"


def test_keras_tuners_best_epoch_checkpoint_is_the_callback_the_hypermodel_feeds_rounds():
    import keras_tuner
    from keras_tuner.src.engine import tuner_utils

    checkpoint = tuner_utils.SaveBestEpoch(keras_tuner.Objective("val_compare_accuracy", "max"), "x.weights.h5")
    assert type(checkpoint).__name__ == "SaveBestEpoch" and {"objective", "best_value", "filepath"} <= \
        set(vars(checkpoint)), f"keras-tuner {keras_tuner.__version__}'s SaveBestEpoch changed: " \
                               "tuning/hypermodel.py _keep_if_best reads objective, best_value and filepath"
    tuner_source = inspect.getsource(keras_tuner.Tuner.run_trial)
    assert "SaveBestEpoch" in tuner_source, f"keras-tuner {keras_tuner.__version__}'s Tuner.run_trial no longer " \
                                            "adds SaveBestEpoch: tuning/hypermodel.py finds it by that name"


def test_atexits_run_exitfuncs_is_there():
    assert callable(getattr(atexit, "_run_exitfuncs", None)), \
        "atexit._run_exitfuncs is gone: mnistcompare/cli.py _exit calls it before os._exit"


def test_uvicorns_h11_protocol_has_what_the_deadlines_read():
    pytest.importorskip("uvicorn", reason="mnistcompare-serve's extra (.[serve]) is not installed")
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol

    source = inspect.getsource(H11Protocol)
    for name in ("self.cycle", "response_complete", "self.connections", "self.loop", "self.transport",
                 "def data_received", "def connection_made", "def connection_lost"):
        assert name in source, f"uvicorn {uvicorn.__version__}'s H11Protocol has no {name}: mnistcompare/serve.py " \
                               "deadline_protocol reads it"
