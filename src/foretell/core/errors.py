"""The one exception type that means "the user asked for something we cannot do"."""


class ForetellError(ValueError):
    """A user-facing error: bad flag value, missing file, unsupported model, impossible config.

    The CLI prints its message as one line and exits non-zero; it never shows a traceback.
    Messages should say what was wrong and what is accepted.
    """
