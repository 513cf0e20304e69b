"""Search spaces over `mnistcompare.Config` (imports no TensorFlow, so bad ones fail at once).

A space is a dict {name: axis}. An axis is a list of values (a grid axis,
keras-tuner's hp.Choice) or a range {"min": low, "max": high, "sampling":
"linear" or "log"} (hp.Int or hp.Float, for the random, Bayesian and
Hyperband tuners). Each name is a Config field (alpha, lr, dropout,
batch_size, combine, ...) or one of the shorthands below, which set a
tuple-valued field from one number:

    channels  first conv's channels; the others keep the base config's ratios (8 -> 8,16,32)
    hidden    units of every hidden dense layer of the tower
    head      units of every hidden layer of the comparison head
    layers    number of hidden dense layers of the tower (report 001's KL)
    head_layers  number of hidden layers of the comparison head (report 001's C-KL)
    kernel    kernel size of every conv layer
    widths    every conv layer's channels, as "16-32-64" (report 000's channel search)
"""
import dataclasses
import math

from mnistcompare.config import Config
from mnistcompare.errors import UserError

SHORTHANDS = ("channels", "hidden", "head", "layers", "head_layers", "kernel", "widths")
SCALARS = {f.name: f.type for f in dataclasses.fields(Config) if f.type in (int, float, str, bool)}


def check_name(name):
    """UserError unless `name` is a Config field a space can set, or a shorthand."""
    if name not in SHORTHANDS and name not in SCALARS:
        raise UserError(f"unknown name {name!r}; use a training option ({', '.join(sorted(SCALARS))}) "
                        f"or {', '.join(SHORTHANDS)}")


def apply(cfg: Config, values: dict) -> Config:
    """The Config that grid point `values` describes (shorthands applied after scalars)."""
    for name in values:  # (a space made in Python is not parsed: a name it does not know would set nothing)
        check_name(name)
    # keras-tuner may hand back a bool as 0/1 and an int as a float (its gRPC messages): the field's type
    changes = {k: SCALARS[k](v) for k, v in values.items() if k in SCALARS}
    cfg = cfg.replace(**changes)
    for units, layers in (("hidden", "layers"), ("head", "head_layers")):  # the tower's layers, the head's
        if units in values or layers in values:
            old = getattr(cfg, units)
            cfg = cfg.replace(**{units: (values.get(units, old[0] if old else 64),) * values.get(layers, len(old))})
    if "channels" in values:
        base = cfg.channels or (values["channels"],)
        cfg = cfg.replace(channels=tuple(max(1, round(c * values["channels"] / base[0])) for c in base))
    if "kernel" in values:
        cfg = cfg.replace(kernel=(values["kernel"],))
    if "widths" in values:
        try:
            cfg = cfg.replace(channels=tuple(int(c) for c in str(values["widths"]).split("-")))
        except ValueError:
            raise UserError(f"widths are channels joined by '-' (16-32-64), got {values['widths']!r}") from None
    return cfg


def _number(text, kind):
    text = text.strip()
    try:
        if kind is bool:
            return {"true": True, "false": False}[text.lower()]
        if kind is int and not (text.lstrip("+-").isascii() and text.lstrip("+-").isdigit()):
            raise ValueError(text)
        return kind(text)
    except (ValueError, KeyError):
        raise UserError(f"expected {kind.__name__} values{' (true or false)' if kind is bool else ''}, "
                        f"got {text!r}") from None


MAX_POINTS = 10_000  # points of a whole grid: more would train for months


def parse_values(text, kind):
    """'8,16,32' or 'start:stop:step' (inclusive, exact decimals) -> list of `kind`."""
    text = text.strip()
    if not text:
        raise UserError("no values")
    if ":" in text and kind in (int, float):
        parts = text.split(":")
        if len(parts) != 3:
            raise UserError(f"a range is start:stop:step, got {text!r}")
        start, stop, step = (_number(p, kind) for p in parts)
        if step <= 0 or stop < start:
            raise UserError(f"empty range {text!r}")
        count = int(round((stop - start) / step)) + 1
        if count > MAX_POINTS:  # counted before a value is made
            raise UserError(f"the range {text!r} holds {count:,} values, more than a grid may have ({MAX_POINTS:,})")
        # Rounded so that 0.2:0.8:0.2 gives 0.6, not 0.6000000000000001, and keeps the stop value.
        values = [round(start + i * step, 10) for i in range(count) if start + i * step <= stop + 1e-9]
        return [kind(v) for v in values]
    return [_number(v, kind) for v in text.split(",") if v.strip()]


def parse_range(text, kind):
    """'1e-4..1e-2:log' -> {"min": 0.0001, "max": 0.01, "sampling": "log"} (low < high; log: low > 0)."""
    bounds, _, sampling = text.partition(":")
    sampling = sampling.strip() or "linear"
    if sampling not in ("linear", "log"):
        raise UserError(f"a range is low..high or low..high:log, got {text!r}")
    if kind not in (int, float):
        raise UserError(f"a range needs a number option, not a {kind.__name__} one")
    low, high = (_number(b, kind) for b in bounds.split("..", 1))
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise UserError(f"a range needs low < high, got {text!r}")
    if sampling == "log" and low <= 0:
        raise UserError(f"a log range needs low > 0, got {text!r}")
    return {"min": low, "max": high, "sampling": sampling}


def points(space):
    """Points of a space whose axes are all lists (a grid); None if it has a range."""
    if any(isinstance(axis, dict) for axis in space.values()):
        return None
    return math.prod(len(values) for values in space.values())


def parse_grid(specs, base: Config, ranges=False):
    """['alpha=0.2:0.8:0.2', 'channels=8,16', 'lr=1e-4..1e-2:log'] -> {'alpha': [...], 'channels': [...],
    'lr': {"min": ..., "max": ..., "sampling": "log"}}, each value (each range's ends) checked. Ranges only
    with `ranges=True` (a grid cannot enumerate them)."""
    grid = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        try:
            if not sep:
                raise UserError("expected NAME=VALUES")
            check_name(name)
            kind = SCALARS.get(name, str if name == "widths" else int)
            if ".." in text:
                if not ranges:
                    raise UserError("a range low..high is for --tuner random, bayesian or hyperband; a grid "
                                    "takes values (a,b,c or start:stop:step)")
                axis = parse_range(text, kind)
                values = [axis["min"], axis["max"]]
            else:
                axis = values = list(dict.fromkeys(parse_values(text, kind)))  # drop repeats, keep order
            for value in values:
                if name in ("channels", "hidden", "head", "kernel") and value < 1:
                    raise UserError(f"{name} must be >= 1, got {value}")
                apply(base, {name: value}).validate()
        except UserError as e:
            raise UserError(f"--grid {spec}: {e}") from None
        grid[name] = axis
    if not grid:
        raise UserError("--grid: give at least one NAME=VALUES")
    count = points(grid)
    if count is not None and count > MAX_POINTS:
        raise UserError(f"--grid: {count:,} points, more than a grid may have ({MAX_POINTS:,}); search fewer values")
    return grid
