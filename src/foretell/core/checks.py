"""Type predicates for checking what a public function was given (shared by the systems' checks).

A bool is an ``int`` subclass in Python and numpy scalars are not Python numbers; these say what
a user means by "an integer", "a number" and "a flag".
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def is_bool(value) -> bool:
    """``True``/``False`` (or a numpy bool), not a string, a number or None."""
    return isinstance(value, (bool, np.bool_))


def is_int(value) -> bool:
    """A real integer (Python or numpy), not a bool, a float or a string."""
    return isinstance(value, numbers.Integral) and not is_bool(value)


def is_real(value) -> bool:
    """A real number (Python or numpy int / float), not a bool or a string."""
    return isinstance(value, numbers.Real) and not is_bool(value)


def in_interval(value: float, low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> bool:
    """``value`` is finite and between ``low`` and ``high`` (each end closed unless ``low_open`` /
    ``high_open``; infinite ends mean no bound)."""
    return (math.isfinite(value) and low <= value <= high and not (low_open and value == low)
            and not (high_open and value == high))
