"""mnistcompare-predict: your own images put in MNIST form, answered as serve_mnist answers the originals."""
import json

import numpy as np
import pytest
from PIL import Image

from helpers import one_line
from mnistcompare.predict import to_mnist


def _digit(size=28, value=255):
    image = np.zeros((size, size), np.uint8)
    image[size // 4: 3 * size // 4, size // 2 - size // 10: size // 2 + size // 10] = value  # a "1"
    return image


def test_mnist_form_is_white_on_black_20_pixels_centred_by_mass():
    big = np.full((200, 300), 250, np.uint8)  # dark ink on light paper, off centre
    big[20:120, 30:60] = 10
    x = to_mnist(big)
    assert x.shape == (28, 28) and x.dtype == np.uint8
    rows, cols = np.nonzero(x > 25)
    assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (20, 21)  # the box's long side
    mass = x.astype(float) / x.sum()
    assert abs((mass.sum(1) * np.arange(28)).sum() - 13.5) < 1 and abs((mass.sum(0) * np.arange(28)).sum() - 13.5) < 1
    assert x[0].max() == 0 and x.max() == 255  # black background, white digit
    # A 28x28 image in MNIST form (20 pixels tall, centred) is taken as it is: only the polarity is fixed.
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255
    np.testing.assert_array_equal(to_mnist(255 - digit), digit)
    np.testing.assert_array_equal(to_mnist(digit), digit)
    # A 28x28 drawing that fills its frame, or sits in a corner, is prepared like any other image.
    for drawn in (_digit(), np.pad(np.full((26, 3), 255, np.uint8), ((1, 1), (2, 23)))):
        rows, cols = np.nonzero(to_mnist(drawn) > 25)
        assert max(rows.max() - rows.min(), cols.max() - cols.min()) + 1 in (20, 21)
        np.testing.assert_array_equal(to_mnist(drawn, raw=True), drawn)  # unless it is raw MNIST


@pytest.mark.slow
def test_predict_answers_for_png_files_as_serve_mnist_for_the_originals(trained_run, mnist_dir, tmp_path, main):
    import tensorflow as tf

    from mnistcompare.data import find_source, load_mnist

    out, _, _ = trained_run
    images, labels = load_mnist("test", find_source(data_dir=mnist_dir))
    pick = [0, 1, 2, 3, 4, 7]
    model = tf.saved_model.load(str(out / "saved_model" / "1"))
    expected = model.serve_mnist(images[pick[::2]], images[pick[1::2]])
    files = []
    for n, i in enumerate(pick):
        image = Image.fromarray(images[i])
        variants = {"white28": image, "black28": Image.fromarray(255 - images[i]),
                    "black200": Image.fromarray(255 - images[i]).resize((200, 200), Image.Resampling.BILINEAR),
                    "white200rgb": image.resize((200, 200), Image.Resampling.BILINEAR).convert("RGB")}
        for name, variant in variants.items():
            variant.save(tmp_path / f"{n}-{name}.{'jpg' if 'rgb' in name else 'png'}")
        files.append(n)
    rows = []
    for name in ("white28", "black28", "black200", "white200rgb"):
        ext = "jpg" if "rgb" in name else "png"
        rows += [f"{a}-{name}.{ext},{b}-{name}.{ext}" for a, b in zip(files[::2], files[1::2])]
    (tmp_path / "pairs.csv").write_text("\n".join(rows) + "\n")

    result = main("predict", out, "--pairs", tmp_path / "pairs.csv", "--json", "--show", tmp_path / "show.png")
    assert result.returncode == 0, result.stderr[-3000:]
    answers = json.loads(result.stdout)
    assert len(answers) == 12 and (tmp_path / "show.png").read_bytes()[:4] == b"\x89PNG"
    for k, row in enumerate(answers):
        pair = k % 3
        assert row["a_le_b"] == bool(expected["compare"][pair] > 0.5), row
        assert row["digit_a"] == int(np.argmax(expected["digit_a"][pair])), row
        assert row["digit_b"] == int(np.argmax(expected["digit_b"][pair])), row
        if k < 6:  # 28x28: the very images, so the very numbers
            assert row["p_a_le_b"] == pytest.approx(float(expected["compare"][pair]), abs=1e-5)

    one = main("predict", out, tmp_path / "0-black200.png", tmp_path / "1-white28.png")
    digit = int(np.argmax(expected["digit_a"][0]))
    assert one.returncode == 0 and one.stdout.count("P(a <= b)") == 1 and f"0-black200.png: {digit} at" in one.stdout


@pytest.mark.parametrize("content, message", [
    (None, "no such file"), ("folder", "a folder, not an image"), (b"", "the file is empty"),
    ("truncated", "cannot read the image"), (b"just some text", "not an image")])
def test_unreadable_images_are_one_line(content, message, tmp_path, cli):
    (tmp_path / "saved_model").mkdir()
    (tmp_path / "saved_model" / "saved_model.pb").write_bytes(b"")
    Image.fromarray(_digit(200)).save(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    if content == "truncated":  # a real PNG cut short
        content = (tmp_path / "good.png").read_bytes()
        content = content[:len(content) // 2]
    if content == "folder":
        bad.mkdir()
    elif content is not None:
        bad.write_bytes(content)
    assert message in one_line(cli("predict", tmp_path, bad, tmp_path / "good.png"))


def test_predict_usage_mistakes_are_one_line(tmp_path, cli):
    assert "neither a run folder" in one_line(cli("predict", tmp_path, "a.png", "b.png"))
    assert "expected two images" in one_line(cli("predict", tmp_path, "a.png"))
    (tmp_path / "pairs.csv").write_text("a.png,b.png,c.png\n")
    (tmp_path / "saved_model.pb").write_bytes(b"")
    assert "expected two image paths" in one_line(cli("predict", tmp_path, "--pairs", tmp_path / "pairs.csv"))


@pytest.mark.slow
def test_a_damaged_saved_model_is_one_line(trained_run, tmp_path, main):  # D8
    import shutil

    out, _, _ = trained_run
    shutil.copytree(out / "saved_model", tmp_path / "saved_model")
    (data,) = (tmp_path / "saved_model" / "1" / "variables").glob("variables.data-*")
    data.write_bytes(data.read_bytes()[:data.stat().st_size // 2])
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 12:16] = 255
    Image.fromarray(digit).save(tmp_path / "a.png")
    result = main("predict", tmp_path, tmp_path / "a.png", tmp_path / "a.png")
    assert "cannot load the SavedModel" in one_line(result)
