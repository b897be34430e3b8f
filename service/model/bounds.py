"""Type and range checks for the numbers in a model's config, and the bounds they must keep.

A checkpoint's config is trusted only as far as it is checked: its numbers decide how many
modules are built, how large they are and how many times a Python loop runs per request, and a
damaged one (NaN, 10**6 layers, 10**30 units) used to load and then fail or hang at request
time. The bounds are far above anything trained here (the bundled models use 2 layers of 64
units, one ODE-Net segment, 4 RK steps; the trainers' defaults are no larger), so that they
refuse only values no real model holds.
"""

from __future__ import annotations

import math
from numbers import Integral, Real

# Modules built one at a time (hidden layers, residual blocks): each costs Python-level work when
# building and when called, so 10**6 of them kept start-up, or every request, from ever finishing.
MAX_DEPTH = 1000
# Solves per forward pass (ODE-Net segments, RK-Net steps) are bounded tighter: each ODE-Net
# segment is at least one dopri5 step, 8 evaluations of the conv field, on every request, and
# 1000 segments took 7 s to classify one image and 77 s for 100.
MAX_SOLVES_PER_PASS = 100
# Units of a layer, latent dimensions, channels. The weights' shapes are compared with the
# architecture before anything is allocated, so this bound is not what keeps memory in check;
# it refuses, by name, sizes that torch cannot even represent (10**30 overflows its int64).
MAX_WIDTH = 100_000
# torchdiffeq converts ``max_num_steps`` to int32: anything larger failed at every solve.
MAX_INT32 = 2**31 - 1
# More torch threads than this is a typo, not a machine: 100000 made libgomp run out of memory.
MAX_TORCH_THREADS = 1024


def whole_number(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an integer (not a bool, not a float) from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{name} must be a whole number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be from {low} to {high}, got {value!r}")
    return int(value)


def shown_value(value: object, width: int = 40) -> str:
    """``repr(value)`` for a message, cut to ``width`` characters with a mark that it was cut."""
    text = repr(value)
    return text if len(text) <= width else text[:width] + "… (cut)"


def positive_number(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number above 0 (NaN passes a plain ``<= 0`` test)."""
    number = math.nan
    if isinstance(value, Real) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer such as 10**400
            number = math.inf
    if not (math.isfinite(number) and number > 0):
        raise ValueError(f"{name} must be a finite number above 0, got {shown_value(value)}")
    return number
