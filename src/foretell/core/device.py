"""`resolve_device`: turn a user's ``--device`` value into a torch device, or a one-line error.

Every system's CLI takes ``--device`` (default ``cpu``) and its Python API a ``device`` argument;
they all go through this so the accepted values and the error text are the same everywhere.
"""

from __future__ import annotations

import re

from foretell.core.errors import ForetellError

_PATTERN = re.compile(r"^(cpu|cuda|cuda:\d+|mps)$")


def resolve_device(device=None):
    """``None``/"cpu" -> cpu; "cuda", "cuda:N", "mps" or a ``torch.device`` -> that device, checked
    to exist on this machine."""
    import torch

    if device is None:
        return torch.device("cpu")
    if isinstance(device, torch.device):
        name = str(device)
    elif isinstance(device, str):
        name = device.strip().lower()
    else:
        raise ForetellError(f"device must be a string such as 'cpu', 'cuda' or 'cuda:0', got {type(device).__name__}")
    if not _PATTERN.match(name):
        raise ForetellError(f"unknown device {device!r}; accepted: cpu, cuda, cuda:N, mps")
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ForetellError(f"device {name!r} asked but torch sees no CUDA GPU here (torch {torch.__version__}); "
                                "use --device cpu or install a CUDA build of torch")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ForetellError(f"device {name!r} asked but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ForetellError("device 'mps' asked but torch reports no Apple GPU here; use --device cpu")
    return dev


def add_device_argument(parser) -> None:
    """The shared ``--device`` flag of the systems' commands."""
    parser.add_argument("--device", default="cpu",
                        help="where the model runs: cpu (default), cuda, cuda:N or mps")


def parse_args_with_device(parser, argv=None):
    """``parser.parse_args(argv)`` plus its ``--device`` resolved: ``(args, torch.device)``. A bad or
    absent device is the parser's own one-line usage error (exit 2), as for any other bad flag. For the
    scripts and benchmarks; the ``foretell`` commands resolve it in their handlers."""
    args = parser.parse_args(argv)
    try:
        return args, resolve_device(args.device)
    except ForetellError as exc:
        parser.error(str(exc))
