"""Damaged files and unbounded inputs: each is one clear UserError (one line, exit 2), found before anything
is allocated or trained (the cases of a hostile user's sweep: D3-D5, D7-D10, D13-D15)."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import one_line, write_idx
from mnistcompare.config import Config
from mnistcompare.errors import UserError


def test_a_truncated_mnist_npz_is_one_clear_error(tmp_path):  # D4
    from mnistcompare.data import load_npz

    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=np.zeros((4, 28, 28), np.uint8), y_train=np.zeros(4), x_test=np.zeros((2, 28, 28),
             np.uint8), y_test=np.zeros(2))
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(UserError, match="not Keras' mnist.npz"):
        load_npz(str(path), "train")


def test_idx_files_of_zero_images_are_one_clear_error(tmp_path):  # D5
    from mnistcompare.data import Source, load_mnist

    for stem, array in (("train-images-idx3-ubyte", np.zeros((4, 28, 28))), ("train-labels-idx1-ubyte", np.zeros(4)),
                        ("t10k-images-idx3-ubyte", np.zeros((0, 28, 28))), ("t10k-labels-idx1-ubyte", np.zeros(0))):
        write_idx(tmp_path / stem, array)
    with pytest.raises(UserError, match="the test split holds no images"):
        load_mnist("test", Source("idx", str(tmp_path)))


def _png_claiming(path, width, height):
    """A small PNG file whose header claims width x height pixels."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))


def test_a_huge_image_is_refused_before_it_is_decoded(tmp_path):  # D7
    from mnistcompare.predict import load_image

    for width, height in ((20000, 20000), (8000, 8000)):  # beyond Pillow's own guard, and within it
        _png_claiming(tmp_path / "huge.png", width, height)
        with pytest.raises(UserError, match="more pixels than the 50,000,000 an image may have"):
            load_image(str(tmp_path / "huge.png"))


def test_a_pairs_file_that_is_not_text_is_one_clear_error(tmp_path):  # D9
    from mnistcompare.predict import read_pairs_file

    (tmp_path / "pairs.csv").write_bytes(b"a.png,b.png\n\xff\xfe,c.png\n")
    with pytest.raises(UserError, match="not a text CSV file"):
        list(read_pairs_file(str(tmp_path / "pairs.csv")))  # (read as it is needed)


def test_a_16_bit_image_keeps_its_grey_levels(tmp_path):  # D10
    from mnistcompare.predict import load_image

    levels = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "wide.png")
    gray = load_image(str(tmp_path / "wide.png"))
    np.testing.assert_allclose(gray, levels / 257.0, atol=0.01)  # 0..65535 -> 0..255, not clipped to 0/255


def test_a_grid_too_large_is_refused_before_its_values_are_made():  # D13
    from mnistcompare.tuning.grid import parse_grid

    with pytest.raises(UserError, match="4,294,967,296 values, more than a grid may have"):
        parse_grid(["seed=0:4294967295:1"], Config())
    with pytest.raises(UserError, match="10,201 points"):
        parse_grid(["lr=0.001:0.101:0.001", "dropout=0.0:0.99:0.0099"], Config())


def test_layer_widths_are_bounded_and_long_values_are_not_echoed_whole():  # D14, D15
    with pytest.raises(UserError, match=r"--hidden: must be in \[1, 65536\], got 2000000000"):
        Config(hidden=(2000000000,)).validate()
    with pytest.raises(UserError) as refused:
        Config(arch="x" * 50_000_000).validate()
    assert len(str(refused.value)) < 300 and "50,000,002 characters" in str(refused.value)


@pytest.mark.parametrize("damage", ["half", "empty", "garbage"])
def test_a_damaged_backup_falls_back_to_the_one_before_it_or_is_one_clear_error(damage, tiny_pairs, tmp_path,
                                                                                capsys):  # D3
    from helpers import SMALL
    from mnistcompare.callbacks import Checkpoint
    from mnistcompare.training import new_model, train_round

    train, test = tiny_pairs
    cfg = Config(**SMALL, epochs=2, batch_size=32).validate()
    train_round(cfg, train, test, verbose=0, callbacks=[Checkpoint(tmp_path)])
    first, second = sorted(tmp_path.glob("epoch-*.npz"))

    def spoil(path):
        path.write_bytes({"half": path.read_bytes()[:path.stat().st_size // 2], "empty": b"",
                          "garbage": b"PK\x03\x04" + b"\x00garbage" * 20}[damage])
    spoil(second)
    assert Checkpoint(tmp_path).restore(new_model(cfg, train)) == 1
    assert f"the backup {second.name} ({'EOFError' if damage == 'empty' else 'BadZipFile'}) in {tmp_path} is " \
           f"damaged: resuming from {first.name}, epoch 1" in capsys.readouterr().err
    spoil(first)
    with pytest.raises(UserError, match="backups in .* are damaged .*; pass --overwrite"):
        Checkpoint(tmp_path).restore(new_model(cfg, train))


def test_a_bad_value_in_a_config_file_is_named_by_its_key(tmp_path, cli):
    (tmp_path / "bad.json").write_text('{"arch": "siamese", "batch_size": -3}')
    line = one_line(cli("train", "--config", tmp_path / "bad.json", "--out", tmp_path / "run"))
    assert f'--config {tmp_path / "bad.json"}: "batch_size": must be >= 1, got -3' in line
    assert not (tmp_path / "run").exists()


def test_a_bad_config_made_in_python_is_one_user_error_at_the_api_too(tiny_pairs):
    # unvalidated, it trained 0 epochs, or with a negative learning rate, or failed deep inside (KeyError,
    # ZeroDivisionError); load_pairs drew 29,995 pairs for pairs=-5
    from helpers import SMALL
    from mnistcompare.data import load_pairs, to_dataset
    from mnistcompare.models import build_model
    from mnistcompare.training import train_round

    for changes, flag in (({"epochs": 0}, "--epochs"), ({"lr": -1.0}, "--lr"), ({"batch_size": 0}, "--batch-size")):
        with pytest.raises(UserError, match=flag):
            train_round(Config(**SMALL, **changes), *tiny_pairs, verbose=0)
    with pytest.raises(UserError, match="--arch"):
        build_model(Config(arch="nope"))
    with pytest.raises(UserError, match="--pairs"):  # before any MNIST is read: no source needed
        load_pairs(Config(pairs=-5))
    with pytest.raises(UserError, match="--batch-size"):
        to_dataset(tiny_pairs[0], Config(batch_size=0))


def test_no_pairs_to_score_and_a_split_that_holds_out_nothing_are_one_user_error(tiny_pairs):
    # an IndexError, both (the split's check read cfg.pairs, not the pairs given)
    import numpy as np

    from helpers import SMALL
    from mnistcompare.data import Pairs
    from mnistcompare.models import build_model
    from mnistcompare.training import accuracy, model_outputs, train_round

    model = build_model(Config(**SMALL))
    none = Pairs(np.zeros((0, 14, 14, 1)), np.zeros((0, 14, 14, 1)), np.zeros(0, int), np.zeros(0, int))
    assert {k: v.shape for k, v in model_outputs(model, none).items()} == {
        "compare": (0, 1), "digit_a": (0, 10), "digit_b": (0, 10)}
    with pytest.raises(UserError, match="no pairs to score"):
        accuracy(model, none)
    train, test = tiny_pairs  # 64 pairs: 0.005 of them rounds to none
    with pytest.raises(UserError, match="--val-split 0.005 holds out 0 of the 64 pairs given"):
        train_round(Config(**SMALL, val_split=0.005), train, test, verbose=0)


def test_exporting_a_model_with_a_config_of_another_model_is_one_user_error(tmp_path):
    # a ValueError from deep inside the weights' copy ("No such layer: tower")
    from helpers import SMALL
    from mnistcompare.export import export_saved_model
    from mnistcompare.models import build_model

    mlp = build_model(Config(**SMALL, arch="mlp"))
    for other in (Config(**SMALL, arch="siamese"), Config(**{**SMALL, "hidden": (32,)}, arch="mlp")):
        with pytest.raises(UserError, match=rf"the model is not one of this Config \({other.arch}\)"):
            export_saved_model(mlp, other, tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_evaluate_from_python_refuses_no_entries_no_rounds_and_two_entries_of_one_name(tmp_path):
    # a ValueError (max of nothing); a silent run of nothing; two entries' rounds mixed into one row
    from helpers import SMALL
    from mnistcompare.experiments import evaluate
    from mnistcompare.reports import Entry

    entry = Entry("a", Config(**SMALL))
    for entries, rounds, message in (([], 2, "no entries to evaluate"), ([entry], 0, "--rounds: must be a positive"),
                                     ([entry, Entry("a", Config(**SMALL, lr=0.01))], 1, "two entries named 'a'"),
                                     ([Entry("b", Config(**SMALL, epochs=0))], 1, "--epochs: must be >= 1")):
        with pytest.raises(UserError, match=message):
            evaluate(entries, rounds, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
