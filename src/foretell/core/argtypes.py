"""argparse value types with a range: a bad value is argparse's one-line error, exit status 2."""

from __future__ import annotations

import argparse
import math

from foretell.core.checks import in_interval


def int_at_least(minimum: int):
    """An integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (accepted: integers >= {minimum})") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum} (accepted: integers >= {minimum})")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def int_in(low: int, high: int):
    """An integer in [``low``, ``high``]."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer (accepted: integers in [{low}, {high}])") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside [{low}, {high}]")
        return value

    parse.__name__ = f"integer in [{low}, {high}]"
    return parse


MAX_SEED = 2**32 - 1        # numpy's seeds stop here; torch's accept more
MAX_THREADS = 256           # far above any CPU here; torch/OpenBLAS crash on absurd thread counts

seed_int = int_in(0, MAX_SEED)
"""argparse type of a random seed: 0 .. 2**32 - 1."""


def threads_int(minimum: int = 1):
    """argparse type of a thread count: ``minimum`` .. MAX_THREADS (0 where it means "torch's choice")."""
    return int_in(minimum, MAX_THREADS)


def float_in(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False):
    """A finite number between ``low`` and ``high`` (each end closed unless ``low_open`` /
    ``high_open``; ``high=inf``: no upper bound)."""
    if math.isinf(high):
        span = f"{'>' if low_open else '>='} {low:g}"
    else:
        span = f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number (accepted: {span})") from None
        if not in_interval(value, low, high, low_open=low_open, high_open=high_open):
            raise argparse.ArgumentTypeError(f"{value} is outside {span}" if math.isfinite(high)
                                             else f"{value} is out of range (accepted: finite numbers {span})")
        return value

    parse.__name__ = f"number {span}"
    return parse


def int_list(minimum: int):
    """Comma-separated integers, each >= ``minimum`` (at least one)."""
    one = int_at_least(minimum)

    def parse(text: str) -> list[int]:
        values = [one(part.strip()) for part in text.split(",") if part.strip()]
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} lists no integers (accepted: e.g. '1,2,4')")
        return values

    parse.__name__ = f"comma-separated integers >= {minimum}"
    return parse


def existing_dir(text: str) -> str:
    """A folder that exists (the path as given)."""
    from pathlib import Path

    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing folder")
    return text
