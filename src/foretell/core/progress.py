"""Progress bars (tqdm) with one look across the package; quiet when FORETELL_NO_PROGRESS=1."""

from __future__ import annotations

import os
from typing import Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             leave: bool = False, **kwargs) -> tqdm:
    """Wrap ``iterable`` in a tqdm bar (or make a manual bar when ``iterable`` is None)."""
    disable = os.environ.get("FORETELL_NO_PROGRESS", "") not in ("", "0")
    return tqdm(iterable, desc=desc, total=total, leave=leave, disable=disable,
                dynamic_ncols=True, **kwargs)
