"""`servedmodel-export prune`: remove old versions of one model from the store, safely.

The operator runs it as a Job (spec.store.retention) with the versions that must stay: every
declared, served or labelled version. Of the other numbered directories, the newest `keep`
stay and the rest go. A version is first renamed to a hidden, non-numeric name (TF Serving
never sees half a directory: it ignores names that are not numbers) and then deleted; a crash
in between leaves a hidden directory that the next prune removes. Imports no TensorFlow.
"""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from servedmodel_exporter.errors import StoreNotWritable

HIDDEN_PREFIX = ".pruning-"


@dataclass(frozen=True)
class Pruned:
    removed: tuple[int, ...]
    kept: tuple[int, ...]  # unprotected versions kept (the newest `keep`)
    protected: tuple[int, ...]  # protected versions present on the store


def versions(model_dir: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if model_dir.is_dir()
        else []
    )


def prune(store: Path, model_name: str, keep: int, protect: set[int]) -> Pruned:
    model_dir = store / model_name
    present = versions(model_dir)
    unprotected = sorted((v for v in present if v not in protect), reverse=True)
    kept, doomed = unprotected[:keep], unprotected[keep:]
    for stale in model_dir.glob(f"{HIDDEN_PREFIX}*") if model_dir.is_dir() else ():
        shutil.rmtree(stale, ignore_errors=True)  # left by a prune that died mid-way
    removed = []
    for version in sorted(doomed):
        hidden = model_dir / f"{HIDDEN_PREFIX}{version}-{uuid.uuid4().hex[:8]}"
        try:
            (model_dir / str(version)).rename(hidden)
        except OSError as exc:
            raise StoreNotWritable(f"cannot rename version {version}: {exc.strerror}") from exc
        shutil.rmtree(hidden)
        removed.append(version)
    return Pruned(
        removed=tuple(removed),
        kept=tuple(sorted(kept)),
        protected=tuple(v for v in present if v in protect),
    )
