"""Your own images -> MNIST form -> a trained model's answer (`mnistcompare-predict`).

MNIST digits are white on black, scaled to fit 20x20 and centred by mass in 28x28. `to_mnist` brings any
image there (grayscale, polarity from the border, background removed, box scaled, centred by mass); an
image in that form already is taken as it is, its polarity fixed; `raw=True` takes 28x28 images as they are.
"""
import csv
import itertools
import os

import numpy as np

from mnistcompare.data import pool
from mnistcompare.errors import UserError
from mnistcompare.files import atomic_path


MAX_PIXELS = 50_000_000  # an image larger than this is refused before it is decoded


def check_file(path):
    """UserError unless `path` is a file: no such file, or a folder."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: {'a folder, not an image' if os.path.isdir(path) else 'no such file'}")


def load_image(path):
    """A grayscale float array (0..255) of an image file of any size and colour; one clear UserError for a
    missing, empty, corrupt or non-image file."""
    from PIL import Image, UnidentifiedImageError
    check_file(path)
    if os.path.getsize(path) == 0:
        raise UserError(f"{path}: the file is empty")
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_PIXELS:
                raise UserError(f"{path}: {image.width}x{image.height} pixels, more pixels than the {MAX_PIXELS:,} an "
                                "image may have here; scale it down first")
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16 or 32 bits a pixel: scaled to 0..255, not clipped
                wide = np.asarray(image, np.float64)
                top = 65535.0 if image.mode.startswith("I;16") or wide.max() <= 65535 else float(wide.max())
                return (np.clip(wide, 0, top) * (255.0 / top)).astype(np.float32)
            if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
                rgba = image.convert("RGBA")  # transparent parts count as background: laid on white
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            gray = np.asarray(image.convert("L"), np.float32)
    except Image.DecompressionBombError:  # Pillow's own guard, before the image is decoded
        raise UserError(f"{path}: more pixels than the {MAX_PIXELS:,} an image may have here; scale it down "
                        "first") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image (PNG, JPEG, or another format Pillow reads)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path}: cannot read the image ({str(e)[:200]})") from None
    if gray.ndim != 2 or min(gray.shape) < 1:
        raise UserError(f"{path}: not a two-dimensional image")
    return gray


def looks_like_mnist(x):
    """Whether a light-on-dark 28x28 image is in MNIST form: its ink's box (pixels above a tenth of the
    brightest) 17-21 pixels on its long side, and its centre of mass within 2 pixels of the frame's centre."""
    if x.shape != (28, 28) or x.max() <= 0:
        return False
    rows, cols = np.nonzero(x > 0.1 * x.max())
    side = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
    return 17 <= side <= 21 and max(abs(c - 13.5) for c in centre_of_mass(x)) <= 2


def centre_of_mass(x):
    """(row, column) of a 2-D image's centre of mass."""
    return tuple((x.sum(axis) * np.arange(x.shape[1 - axis])).sum() / x.sum() for axis in (1, 0))


def to_mnist(gray, name="image", raw=False):
    """uint8 [28, 28] in MNIST form from a grayscale image (see the module docstring)."""
    x = np.asarray(gray, np.float32)
    if raw:
        if x.shape != (28, 28):
            raise UserError(f"{name}: --raw-mnist takes 28x28 images, this one is {x.shape[1]}x{x.shape[0]}")
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    border = np.concatenate([x[0], x[-1], x[:, 0], x[:, -1]])
    if np.median(border) > 127:  # dark digit on a light background
        x, border = 255 - x, 255 - border
    if looks_like_mnist(x):
        return np.clip(np.round(x), 0, 255).astype(np.uint8)
    x = np.clip(x - np.median(border), 0, None)
    if x.max() <= 0:
        raise UserError(f"{name}: no digit found (the image is uniform)")
    x *= 255 / x.max()
    rows, cols = np.nonzero(x > 0.1 * 255)
    crop = x[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    from PIL import Image
    scale = 20 / max(crop.shape)  # anti-aliased, at least one pixel each way
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    digit = np.asarray(Image.fromarray(crop, mode="F").resize(size, Image.Resampling.LANCZOS), np.float32).clip(0, 255)
    # Centre by mass: the digit's centre of mass on the frame's centre, kept inside the frame.
    h, w = digit.shape
    top, left = (int(np.clip(np.round(13.5 - c), 0, 28 - n)) for c, n in zip(centre_of_mass(digit), (h, w)))
    frame = np.zeros((28, 28), np.float32)
    frame[top:top + h, left:left + w] = digit
    return np.clip(np.round(frame), 0, 255).astype(np.uint8)


def find_saved_model(path):
    """The SavedModel folder of a run folder (DIR/saved_model/1), of a versioned export (BASE/<version>: the
    newest) or of a SavedModel folder itself; a folder that cannot be read is one UserError naming it."""
    def names(folder):  # none if it is no folder
        try:
            return os.listdir(folder) if os.path.isdir(folder) else []
        except OSError as e:
            raise UserError(f"{path}: cannot read {folder} ({e.strerror})") from None

    for base in (os.path.join(path, "saved_model"), path):
        numbered = sorted((int(v), v) for v in names(base) if v.isascii() and v.isdigit())
        for folder in [os.path.join(base, v) for _, v in numbered[::-1]] + [base]:
            if "saved_model.pb" in names(folder):
                return folder
    raise UserError(f"{path}: neither a run folder of mnistcompare-train (with saved_model/) nor a SavedModel folder")


def version_of(folder):
    """The version a SavedModel folder is served as: its name in a base of versions (BASE/<version>), else 1."""
    name = os.path.basename(os.path.normpath(folder))
    return str(int(name)) if name.isascii() and name.isdigit() else "1"


PREDICT_BATCH = 256  # pairs read and answered at a time
SHOW_PAIRS = 50  # pairs --show draws at most


def read_pairs_file(path):
    """(image_a, image_b) paths, one pair per line of a CSV file, read as they are needed (a generator); relative
    paths are taken from the file's folder. UserError for a line that is not two paths, or a file of none."""
    if not os.path.isfile(path):
        raise UserError(f"--pairs {path}: no such file")
    folder = os.path.dirname(os.path.abspath(path))
    found = False
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for number, row in enumerate(csv.reader(f), 1):
                row = [cell.strip() for cell in row if cell.strip()]
                if not row or row[0].startswith("#"):
                    continue
                if len(row) != 2:
                    raise UserError(f"--pairs {path}, line {number}: expected two image paths, got {len(row)} fields")
                found = True
                yield tuple(p if os.path.isabs(p) else os.path.join(folder, p) for p in row)
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"--pairs {path}: not a text CSV file of image paths ({type(e).__name__})") from None
    except OSError as e:
        raise UserError(f"--pairs {path}: cannot read it ({e.strerror})") from None
    if not found:
        raise UserError(f"--pairs {path}: no pair of images in the file")


def batches(items, size):
    """Lists of `size` items (the last shorter) from an iterable, taken as they are needed."""
    items = iter(items)
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def answer(model, images_a, images_b):
    """The served model's answers for uint8 [N, 28, 28] images: a list of dicts."""
    out = model.serve_mnist(images_a, images_b)
    out = {k: np.asarray(v) for k, v in out.items()}
    answers = []
    for i in range(len(images_a)):
        p = float(out["compare"][i])
        row = {"p_a_le_b": round(p, 6), "a_le_b": p > 0.5}
        for side in ("a", "b"):
            if f"digit_{side}" in out:
                probs = out[f"digit_{side}"][i]
                row[f"digit_{side}"] = int(probs.argmax())
                row[f"p_digit_{side}"] = round(float(probs.max()), 6)
        answers.append(row)
    return answers


def describe(row, name_a, name_b):
    """One line for people."""
    digits = ""
    if "digit_a" in row:
        digits = (f"   ({os.path.basename(name_a)}: {row['digit_a']} at {row['p_digit_a']:.2f}, "
                  f"{os.path.basename(name_b)}: {row['digit_b']} at {row['p_digit_b']:.2f})")
    sign = "<=" if row["a_le_b"] else ">"
    return f"{name_a} vs {name_b}: P(a <= b) = {row['p_a_le_b']:.3f} -> a {sign} b{digits}"


def show(pairs, images_a, images_b, answers, path):
    """A picture of each pair as the model sees it (14x14), with its answer."""
    from matplotlib.figure import Figure
    n = len(pairs)
    fig = Figure(figsize=(4.4, 2.3 * n))
    axes = fig.subplots(n, 2, squeeze=False)
    for i, ((name_a, name_b), row) in enumerate(zip(pairs, answers)):
        for ax, image, name, side in ((axes[i][0], images_a[i], name_a, "a"), (axes[i][1], images_b[i], name_b, "b")):
            ax.imshow(pool(image[None])[0, ..., 0], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            digit = f"\ndigit {row[f'digit_{side}']} ({row[f'p_digit_{side}']:.2f})" if f"digit_{side}" in row else ""
            ax.set_title(f"{side}: {os.path.basename(name)[:22]}{digit}", fontsize=8)
        sign = "≤" if row["a_le_b"] else ">"
        axes[i][0].set_ylabel(f"a {sign} b\nP = {row['p_a_le_b']:.3f}", fontsize=9, rotation=0, labelpad=28,
                              va="center")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
