import json

import pytest

from mnistcompare.config import ARCHS, Config
from mnistcompare.errors import UserError
from mnistcompare.reports import PRESETS, preset


def test_defaults_validate_for_every_arch():
    for arch in ARCHS:
        assert Config(arch=arch).validate().arch == arch


@pytest.mark.parametrize("changes, flag", [
    (dict(arch="nope"), "--arch: must be one of baseline"), (dict(epochs=-1), "--epochs"), (dict(epochs=0), "--epochs"),
    (dict(batch_size=0), "--batch-size"), (dict(lr=0.0), "--lr"), (dict(alpha=1.5), "--alpha"),
    (dict(alpha=-0.1), "--alpha"), (dict(dropout=1.0), "--dropout"), (dict(pairs=30001), "--pairs"),
    (dict(test_pairs=5001), "--test-pairs"), (dict(kernel=(3, 3)), "--kernel"), (dict(arch="baseline", channels=()), "--channels"),
    (dict(padding=("full",)), "--padding"), (dict(patience=5), "--patience"), (dict(combine="sum"), "--combine"),
    (dict(epochs="ten"), "--epochs"), (dict(padding=(1,)), "--padding"), (dict(padding=("²",)), "--padding"), (dict(seed=2 ** 32), "--seed"),
    (dict(numerics="torch,nope"), "--numerics"), (dict(output="logits"), "--output"), (dict(pairs=1, val_split=0.6), "leaves no training pair"),
    (dict(dense_pool=2, hidden=(75,)), "--dense-pool"), (dict(bottleneck=10), "--bottleneck: only with"),
    (dict(arch="digits", head_input="probs"), "--head-input: only with"), (dict(head_input="features", head=()),
                                                                           "--head-input: features needs"),
    (dict(channels=(16, 32, 64, 128), kernel=(3,), pool=(2,)), "shrinks the 14x14 image"),
    (dict(arch="baseline", channels=(8,), kernel=(15,), pool=(1,)), "shrinks the 14x14 image"), (dict(lr=float("nan")), "--lr"), (dict(channels=(8, 0, 4)), "--channels"),
])
def test_bad_values_name_the_flag(changes, flag):
    with pytest.raises(UserError, match=flag):
        Config(**changes).validate()


def test_mlp_needs_no_channels():
    Config(arch="mlp", channels=()).validate()


def test_json_round_trip(tmp_path):
    cfg = Config(arch="two_tower", channels=(8, 16), kernel=(3,), pool=(2, 1), alpha=0.44, swap=True)
    cfg.save(tmp_path / "config.json")
    assert Config.load(tmp_path / "config.json") == cfg


def test_load_reads_config_inside_a_metrics_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"test_accuracy": 0.9, "config": {"arch": "digits", "epochs": 3}}))
    assert Config.load(path) == Config(arch="digits", epochs=3)


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"), ('{"epochs": 3, "colour": "red"}', "unknown option"), ("[1, 2]", "JSON object")])
def test_malformed_config_files(tmp_path, text, message):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(UserError, match=message):
        Config.load(path)


def test_a_folder_given_as_a_config_file_is_named_so(tmp_path):  # it said "not valid JSON: [Errno 21] ..."
    with pytest.raises(UserError) as raised:
        Config.load(tmp_path)
    assert str(raised.value) == f"config file {tmp_path} is a folder: give a file, e.g. {tmp_path}/config.json"


def test_wrong_type_in_config_file_is_caught_by_validate(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"epochs": "25"}')
    with pytest.raises(UserError, match="--epochs: expected int"):
        Config.load(path).validate()


def test_presets_validate_and_unknown_preset_is_refused():
    for name in PRESETS:
        preset(name).validate()
    with pytest.raises(UserError, match="unknown preset"):
        preset("report999")


def test_outputs_are_written_atomically_with_usual_permissions(tmp_path):
    import os

    from mnistcompare.files import atomic_path, write_json

    write_json(tmp_path / "a.json", {"x": 1})
    assert oct(os.stat(tmp_path / "a.json").st_mode & 0o777) == oct(0o666 & ~_umask())
    with pytest.raises(RuntimeError):
        with atomic_path(str(tmp_path / "a.json")) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed mid-write")
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": 1}  # the old file is intact
    assert os.listdir(tmp_path) == ["a.json"]  # no temporary file left behind


def _umask():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_every_preset_and_default_fits_a_14x14_image():
    for arch in ARCHS:
        Config(arch=arch).validate()
    Config(channels=(16, 32, 64, 128), kernel=(3,), padding=("same",), pool=(2, 2, 2, 1)).validate()
    Config(channels=(16, 20), kernel=(5,), padding=("3",), pool=(2,)).validate()  # report 004: 14->16->8->10->5
