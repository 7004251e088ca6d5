"""`servedmodel-operator` (and `python -m servedmodel_operator`): see app.py."""

from __future__ import annotations

import sys

# kopf imports these client libraries at start-up, if installed, only to recognise their
# objects. The operator uses none of them (kube.py talks to the API server), and `kubernetes`
# alone adds tens of MB to every replica. Blocked before anything imports kopf, so that a
# development venv, where they are installed for the tests, runs the same process as the
# slim image, where they are not.
UNUSED_CLIENTS = ("kubernetes", "kubernetes_asyncio", "pykube")


def main(argv: list[str] | None = None) -> int:
    for name in UNUSED_CLIENTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from servedmodel_operator import app

    return app.main(argv)


if __name__ == "__main__":
    sys.exit(main())
