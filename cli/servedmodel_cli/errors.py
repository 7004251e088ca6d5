"""What the CLI reports: one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

# Exit codes (README, "Day-2: the servedmodel CLI").
OK = 0
FAILED = 1  # an error: missing object, no permission, prediction refused, unreachable address
USAGE = 2  # bad command line (argparse's own code)
TIMED_OUT = 3  # wait: the timeout passed first
STALLED = 4  # wait: the ServedModel is Stalled (progress needs a human)

# Set to 1 for tracebacks of unexpected errors and TensorFlow's start-up lines.
DEBUG = "SERVEDMODEL_CLI_DEBUG"


class CliError(Exception):
    """One clear line for the user, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure ("[Errno 111] Connection refused"), not the
    retry and pool wrappers around it."""
    seen: BaseException = exc
    for _ in range(8):
        nested = seen.args[0] if seen.args and isinstance(seen.args[0], BaseException) else None
        nested = nested or getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if not isinstance(nested, BaseException):
            break
        seen = nested
    text = str(seen)
    marker = "Failed to establish a new connection: "
    return text.split(marker, 1)[1] if marker in text else text
