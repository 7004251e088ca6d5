"""The console scripts `servedmodel` and `kubectl-servedmodel` (kubectl's plugin name)."""

from __future__ import annotations

import os
import re
import sys

from servedmodel_cli import args as cli_args
from servedmodel_cli import commands, errors, kube
from servedmodel_cli.errors import DEBUG, CliError
from servedmodel_cli.text import escape


def one_line(message: str) -> str:
    """TF Serving's errors carry newlines and tabs (a graph node on the next line); any other
    control character is escaped (text.escape)."""
    return escape(re.sub(r"\s*\n\s*|\t", " ", message.strip()))


def main(argv: list[str] | None = None, prog: str = "servedmodel") -> int:
    parsed = cli_args.parse(sys.argv[1:] if argv is None else argv, prog)
    try:
        session = kube.connect(
            parsed.kubeconfig,
            parsed.context,
            parsed.namespace,
            parsed.as_user,
            parsed.as_group,
            parsed.request_timeout,
        )
        return commands.run(session, parsed)
    except CliError as exc:
        sys.stdout.flush()
        print(f"error: {one_line(exc.message)}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get(DEBUG):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {escape(str(exc))} (set {DEBUG}=1 for the "
            "traceback)",
            file=sys.stderr,
        )
        return errors.FAILED


def kubectl_plugin() -> int:
    """`kubectl servedmodel ...`: kubectl runs kubectl-servedmodel with the rest of the line."""
    return main(prog="kubectl servedmodel")


if __name__ == "__main__":
    sys.exit(main())
