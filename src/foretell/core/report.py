"""Report writing: machine facts and versions for every report, and atomic file writes.

Every report is written to a temporary file in the target directory and renamed into place,
so an interrupted run never leaves a half-written report behind.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Sequence

_PACKAGES = ("foretell", "torch", "numpy", "diffusers", "transformers", "torch_geometric",
             "scikit-learn", "gguf", "safetensors")


def environment_info() -> dict:
    """Versions, machine and time of this run, recorded in every report."""
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "utc_time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda_device"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover
        pass
    return info


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask sets it for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_output_path(path, flag: str, *, directory: bool = False) -> None:
    """Fail early, before any work, when ``path`` (given by ``flag``) cannot be written: empty, a
    directory where a file is wanted (or a file where a directory is), a file in the way of its
    folder, or a folder that does not take files. Creates nothing that stays behind."""
    from foretell.core.errors import ForetellError

    if path is None:
        return
    if str(path).strip() == "":
        raise ForetellError(f"{flag} is empty; pass a {'directory' if directory else 'file'} path")
    p = Path(path)
    if p.exists() and p.is_dir() != directory:
        raise ForetellError(f"{flag} {path} is {'a file' if directory else 'a directory'}; pass a "
                            f"{'directory' if directory else 'file'} path")
    folder = p if directory else p.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ForetellError(f"{flag} {path}: {existing} is a file, so the folder cannot be created")
    try:
        fd, probe = tempfile.mkstemp(prefix=".foretell-write-check.", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ForetellError(f"{flag} {path}: cannot write in {existing} ({exc.strerror or exc})") from None


def check_distinct_outputs(outputs: dict) -> None:
    """Fail early when two outputs of one command (``{what: path}``, None for an output not asked
    for) would land in the same file, so that one report silently overwrites the other. Names that
    differ only in case count as the same file, as they are on case-insensitive file systems."""
    from foretell.core.errors import ForetellError

    seen: dict[str, str] = {}
    for what, path in outputs.items():
        if path is None:
            continue
        key = str(Path(path).resolve()).casefold()
        if key in seen:
            raise ForetellError(f"{seen[key]} and {what} would both write {path}; give them different file names")
        seen[key] = what


def _atomic_write(path: Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        return _jsonable(obj.item())
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    return obj


def write_json(path: str | os.PathLike, report: dict, *, add_environment: bool = True) -> Path:
    """Write ``report`` as JSON atomically; adds ``environment`` unless present or disabled.

    Non-finite floats become null so the file is strict JSON.
    """
    report = dict(report)
    if add_environment and "environment" not in report:
        report["environment"] = environment_info()
    text = json.dumps(_jsonable(report), indent=2, sort_keys=False, allow_nan=False)
    return _atomic_write(Path(path), (text + "\n").encode())


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    return _atomic_write(Path(path), text.encode())


def write_figure(path: str | os.PathLike, fig) -> Path:
    """Save a matplotlib figure atomically (PNG by the path's suffix)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format=Path(path).suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    return _atomic_write(Path(path), buf.getvalue())


def _fmt(value: Any, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if not math.isfinite(value) else f"{value:.{digits}f}"
    return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table of ``rows`` under ``headers``."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(v, digits) for v in row) + " |")
    return "\n".join(lines) + "\n"


def write_markdown_table(path: str | os.PathLike, title: str, headers: Sequence[str],
                         rows: Iterable[Sequence[Any]], digits: int = 3) -> Path:
    """Write ``# title`` and a Markdown table atomically."""
    return write_text(path, f"# {title}\n\n" + markdown_table(headers, rows, digits))
