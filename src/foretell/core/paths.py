"""Locating the repository and the shared data directory (``../shared`` beside the repo)."""

from __future__ import annotations

import os
from pathlib import Path

from foretell.core.errors import ForetellError

SHARED_ENV = "FORETELL_SHARED"


def repo_root() -> Path:
    """The checkout this package runs from (``src/foretell/core/paths.py`` -> repo)."""
    return Path(__file__).resolve().parents[3]


def shared_dir(override: str | os.PathLike | None = None, *, must_exist: str | None = None) -> Path:
    """Return the shared data directory.

    Order: ``override`` argument, the ``FORETELL_SHARED`` environment variable, then ``../shared``
    next to the repository. ``must_exist`` names a sub-path that has to be there; when it is not,
    the error says where we looked and what to put there.
    """
    candidates = []
    if override is not None:
        candidates.append(Path(override))
    elif os.environ.get(SHARED_ENV):
        candidates.append(Path(os.environ[SHARED_ENV]))
    else:
        candidates.append(repo_root().parent / "shared")
    base = candidates[0].expanduser()
    target = base / must_exist if must_exist else base
    if not target.exists():
        raise ForetellError(
            f"data not found: {target} does not exist; put the shared data there "
            f"(e.g. data/graphs/dblp from the FA-GNN release, data/graphs/german from PyGDebias) "
            f"or pass its directory explicitly (--data-dir / {SHARED_ENV})"
        )
    return base
