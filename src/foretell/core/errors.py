"""The one exception type that means "the user asked for something we cannot do"."""


class ForetellError(ValueError):
    """A user-facing error: bad flag value, missing file, unsupported model, impossible config.

    The CLI prints its message as one line and exits non-zero; it never shows a traceback.
    Messages should say what was wrong and what is accepted.
    """


def run_script(main, argv=None) -> int:
    """Exit status of a repository script's ``main(argv)``; a ForetellError becomes one line on stderr
    and status 2 instead of a traceback (as the ``foretell`` command does)."""
    import os
    import sys

    import json

    try:
        return int(main(argv) or 0)
    except (ForetellError, OSError, json.JSONDecodeError) as exc:  # bad values, missing or unreadable files
        if os.environ.get("FORETELL_DEBUG", "") not in ("", "0"):
            raise
        detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else exc
        print(f"{os.path.basename(sys.argv[0])}: error: {detail}", file=sys.stderr)
        return 2
