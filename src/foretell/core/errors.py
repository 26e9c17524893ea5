"""The one exception type that means "the user asked for something we cannot do"."""


class ForetellError(ValueError):
    """A user-facing error: bad flag value, missing file, unsupported model, impossible config.

    The CLI prints its message as one line and exits non-zero; it never shows a traceback.
    Messages should say what was wrong and what is accepted.
    """


def debug_enabled() -> bool:
    """True when ``FORETELL_DEBUG`` asks for tracebacks instead of one-line errors."""
    import os

    return os.environ.get("FORETELL_DEBUG", "") not in ("", "0")


def os_error_line(exc: OSError) -> str:
    """One line for a missing or unreadable file: the reason and the path."""
    return f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)


def run_script(main, argv=None) -> int:
    """Exit status of a repository script's ``main(argv)``; a ForetellError, a missing or unreadable
    file or malformed JSON becomes one line on stderr and status 2 instead of a traceback (as the
    ``foretell`` command does)."""
    import json
    import os
    import sys

    try:
        return int(main(argv) or 0)
    except (ForetellError, OSError, json.JSONDecodeError) as exc:
        if debug_enabled():
            raise
        detail = os_error_line(exc) if isinstance(exc, OSError) else exc
        print(f"{os.path.basename(sys.argv[0])}: error: {detail}", file=sys.stderr)
        return 2
