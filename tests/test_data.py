import numpy as np
import pytest

from helpers import fake_mnist, write_idx
from mnistcompare.config import Config
from mnistcompare.errors import UserError
from mnistcompare.data import (Pairs, find_source, load_mnist, load_pairs, make_pairs, normalisation, pool,
                               read_idx, to_dataset)


def test_pool_is_2x2_average_at_pixel_scale():
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    pooled = pool(images)
    assert pooled.shape == (2, 14, 14, 1) and pooled.dtype == np.float32
    expected = images[1, 2:4, 6:8].astype(np.float32).mean()
    assert pooled[1, 1, 3, 0] == pytest.approx(expected)
    for wrong in (images[0], images[:, :, :27]):  # one image without its batch axis; not 28x28
        with pytest.raises(UserError, match=r"pool: expected raw MNIST images of shape \[N, 28, 28\]"):
            pool(wrong)


def test_pairs_follow_the_protocol():
    images, labels = fake_mnist(100, 0)
    pairs = make_pairs(images, labels, 30, np.random.default_rng(7))
    # Rebuild the same permutation: consecutive images of it form the pairs.
    chosen = np.random.default_rng(7).permutation(100)[:60].reshape(30, 2)
    np.testing.assert_array_equal(pairs.digit_a, labels[chosen[:, 0]])
    np.testing.assert_array_equal(pairs.digit_b, labels[chosen[:, 1]])
    np.testing.assert_array_equal(pairs.image_b, pool(images[chosen[:, 1]]))
    np.testing.assert_array_equal(pairs.target, (labels[chosen[:, 0]] <= labels[chosen[:, 1]]).astype(np.float32))
    assert len(set(chosen.ravel())) == 60  # no image used twice


def test_same_seed_same_pairs_other_seed_other_pairs(idx_dir):
    a_train, a_test = load_pairs(Config(pairs=50, seed=3), find_source(idx_dir=str(idx_dir)))
    b_train, b_test = load_pairs(Config(pairs=50, seed=3), find_source(idx_dir=str(idx_dir)))
    c_train, _ = load_pairs(Config(pairs=50, seed=4), find_source(idx_dir=str(idx_dir)))
    np.testing.assert_array_equal(a_train.image_a, b_train.image_a)
    np.testing.assert_array_equal(a_test.digit_b, b_test.digit_b)
    assert not np.array_equal(a_train.image_a, c_train.image_a)


def test_too_many_pairs_for_the_split(idx_dir):
    with pytest.raises(UserError, match="pairs need"):
        load_pairs(Config(pairs=201), find_source(idx_dir=str(idx_dir)))


def test_normalisation_uses_both_images(tiny_pairs):
    train, _ = tiny_pairs
    mean, std = normalisation(train)
    both = np.concatenate([train.image_a, train.image_b])
    assert mean == pytest.approx(both.mean()) and std == pytest.approx(both.std())


def test_idx_gz_and_plain_load(idx_dir):
    images, labels = load_mnist("train", find_source(idx_dir=str(idx_dir)))  # gzipped
    test_images, _ = load_mnist("test", find_source(idx_dir=str(idx_dir)))  # plain
    assert images.shape == (400, 28, 28) and labels.shape == (400,) and test_images.shape == (200, 28, 28)


def test_keras_npz_reads_like_the_idx_files(idx_dir, tmp_path):
    idx = find_source(idx_dir=str(idx_dir))
    (x_train, y_train), (x_test, y_test) = load_mnist("train", idx), load_mnist("test", idx)
    np.savez(tmp_path / "mnist.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    npz = find_source(npz=str(tmp_path / "mnist.npz"))
    assert npz.kind == "npz"
    np.testing.assert_array_equal(load_mnist("train", npz)[0], x_train)
    np.testing.assert_array_equal(load_mnist("test", npz)[1], y_test)
    np.savez(tmp_path / "other.npz", images=x_train)
    with pytest.raises(UserError, match="not Keras' mnist.npz"):
        load_mnist("train", find_source(npz=str(tmp_path / "other.npz")))
    with pytest.raises(UserError, match="--npz .*no such file"):
        find_source(npz=str(tmp_path / "nowhere.npz"))


def test_keras_cache_is_found_when_nothing_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    with pytest.raises(UserError, match="--no-download"):
        find_source(download=False)
    cache = tmp_path / ".keras" / "datasets"
    cache.mkdir(parents=True)
    images, labels = fake_mnist(10, 0)
    np.savez(cache / "mnist.npz", x_train=images, y_train=labels, x_test=images, y_test=labels)
    assert find_source(download=False) == find_source() == type(find_source())("npz", str(cache / "mnist.npz"))


@pytest.mark.parametrize("damage, message", [
    (lambda raw: b"\x00\x00\x08\x01" + raw[4:], "not an IDX file"),  # label magic on an image file
    (lambda raw: raw[:-100], "truncated or corrupt"),
    (lambda raw: raw[:5], "not an IDX file"),
])
def test_corrupt_idx_is_one_clear_error(tmp_path, damage, message):
    path = tmp_path / "t10k-images-idx3-ubyte"
    write_idx(path, fake_mnist(10, 0)[0])
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(UserError, match=message):
        read_idx(str(path), 3)


def test_missing_sources_are_named(tmp_path, idx_dir, monkeypatch):
    with pytest.raises(UserError, match="no such folder"):
        find_source(idx_dir=str(tmp_path / "nowhere"))
    (idx_dir / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(UserError, match="missing t10k-labels-idx1-ubyte"):
        find_source(idx_dir=str(idx_dir))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="TFDS_DATA_DIR"):
        find_source()
    with pytest.raises(UserError, match="--data-dir"):
        find_source(data_dir=str(tmp_path))


@pytest.mark.parametrize("field, value, message", [
    ("image_a", np.zeros((4, 28, 28)), r"shape \[N, 14, 14, 1\], got \[4, 28, 28, 1\]; raw 28x28 MNIST: "
                                       r"mnistcompare.data.pool\(images\) first"),
    ("image_a", np.zeros((4, 7, 7)), r"got \[4, 7, 7, 1\]$"), ("image_b", np.full((4, 14, 14, 1), np.nan), "NaN"),
    ("image_a", np.array([["x"] * 14] * 14 * 4).reshape(4, 14, 14, 1), "numbers"),
    ("digit_a", np.array([0, 1, 2, 10]), "0..9"), ("digit_b", np.zeros(3, int), "length"),
])
def test_pairs_reject_bad_arrays(field, value, message):
    arrays = dict(image_a=np.zeros((4, 14, 14, 1)), image_b=np.zeros((4, 14, 14)),
                  digit_a=np.zeros(4, int), digit_b=np.zeros(4, int))
    arrays[field] = value
    with pytest.raises(UserError, match=message):
        Pairs(**arrays)


def _dataset(pairs, batch_size, shuffle_seed, **augment):
    """One training epoch of `pairs` through to_dataset."""
    return to_dataset(pairs, Config(batch_size=batch_size, seed=shuffle_seed, epochs=1, **augment))


def _batches(ds):
    return [(f["image_a"].numpy(), f["image_b"].numpy(), {k: v.numpy() for k, v in y.items()}) for f, y in ds]


def test_dataset_names_shapes_and_seeded_shuffle(tiny_pairs):
    train, _ = tiny_pairs
    ds = _dataset(train, 16, 1)
    (a, b, y), *_ = _batches(ds)
    assert a.shape == (16, 14, 14, 1) and y["compare"].shape == (16, 1) and y["digit_a"].shape == (16,)
    first = np.concatenate([z[2]["digit_a"] for z in _batches(_dataset(train, 16, 1))])
    again = np.concatenate([z[2]["digit_a"] for z in _batches(_dataset(train, 16, 1))])
    np.testing.assert_array_equal(first, again)
    assert sorted(first) == sorted(train.digit_a)


def test_swap_augmentation_recomputes_the_target(tiny_pairs):
    train, _ = tiny_pairs
    originals = {(round(float(a.sum()), 3), round(float(b.sum()), 3)) for a, b in zip(train.image_a, train.image_b)}
    swapped = 0
    for a, b, y in _batches(_dataset(train, 64, 5, swap=True)):
        np.testing.assert_array_equal(y["compare"][:, 0], (y["digit_a"] <= y["digit_b"]).astype(np.float32))
        for ia, ib in zip(a, b):
            key = (round(float(ia.sum()), 3), round(float(ib.sum()), 3))
            swapped += key not in originals
            assert key in originals or key[::-1] in originals
    assert 0 < swapped < 64


def test_shift_augmentation_moves_pixels_and_keeps_content(tiny_pairs):
    train, _ = tiny_pairs
    image = np.zeros((1, 14, 14, 1), np.float32)
    image[0, 5:9, 5:9] = 200.0
    one = Pairs(image, image, np.array([1]), np.array([2]))
    outs = [_batches(_dataset(one, 1, s, shift=2))[0][0] for s in range(8)]
    assert all(o.sum() == pytest.approx(image.sum()) for o in outs)  # content inside the frame survives
    assert any(not np.array_equal(o, image) for o in outs)
    assert all(set(np.unique(o)) <= {0.0, 200.0} for o in outs)  # whole-pixel shifts, background 0


def test_rotation_and_zoom_change_images_not_labels(tiny_pairs):
    train, _ = tiny_pairs
    plain = _batches(_dataset(train, 64, 3))
    moved = _batches(_dataset(train, 64, 3, rotate=15, zoom=0.1))
    for (a0, _, y0), (a1, _, y1) in zip(plain, moved):
        np.testing.assert_array_equal(y0["compare"], y1["compare"])
        assert not np.allclose(a0, a1)
        assert a1.min() >= 0 and a1.max() <= 255
        # Small transforms keep most of the ink: total brightness within 35 %.
        assert abs(a1.sum() - a0.sum()) < 0.35 * a0.sum()


def test_an_epoch_has_the_same_batches_whichever_epoch_the_stream_starts_at(tiny_pairs):
    """What lets a resumed run repeat an uninterrupted one: epoch e's order and augmentation come from
    (seed, e) alone."""
    train, _ = tiny_pairs
    cfg = Config(batch_size=16, seed=4, epochs=3, swap=True, shift=1, rotate=5.0)
    whole = _batches(to_dataset(train, cfg))
    assert len(whole) == 3 * 4
    for first in (1, 2):
        resumed = _batches(to_dataset(train, cfg, first_epoch=first))
        assert len(resumed) == (3 - first) * 4
        for (a0, b0, y0), (a1, b1, y1) in zip(whole[4 * first:], resumed):
            np.testing.assert_array_equal(a0, a1)
            np.testing.assert_array_equal(y0["digit_b"], y1["digit_b"])
    assert not np.array_equal(whole[0][0], whole[4][0])  # epochs differ


def test_a_tfds_split_is_read_once_then_from_its_decoded_copy(mnist_dir, tmp_path, monkeypatch):
    from mnistcompare import data

    monkeypatch.setenv("MNISTCOMPARE_CACHE", str(tmp_path / "cache"))
    images, labels = data.load_tfds_cached(mnist_dir, "test")
    monkeypatch.setattr(data, "load_tfds", lambda *args: pytest.fail("TFDS read again"))
    again, again_labels = data.load_tfds_cached(mnist_dir, "test")
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_labels, labels)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    (copy,) = (tmp_path / "cache").glob("mnist-test-*.npz")
    copy.write_bytes(b"damaged")  # a damaged copy is read from TFDS again, and rewritten
    monkeypatch.undo()
    monkeypatch.setenv("MNISTCOMPARE_CACHE", str(tmp_path / "cache"))
    np.testing.assert_array_equal(data.load_tfds_cached(mnist_dir, "test")[0], images)
    assert copy.stat().st_size > 1_000_000
