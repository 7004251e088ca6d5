"""`servedmodel-export prune`: remove old versions of one model from the store, safely.

The operator runs it as a Job (spec.store.retention) with the versions that must stay: every
declared, served or labelled version, and the UID of the ServedModel it prunes for. Only a
version whose record (store.METADATA, written by the export) names that UID as its owner is
ever removed: a version exported for another ServedModel (an earlier one of the same name, or
one whose directory this one's overlaps), or one without a readable record (copied in by hand,
written by something else), is left alone and reported (`not_owned`). Of the owned, unprotected
numbered directories, the newest `keep` stay and the rest go. A version is first renamed to a
hidden, non-numeric name (TF Serving never sees half a directory: it ignores names that are
not numbers) and then deleted; a crash in between leaves a hidden directory that the next
prune removes. Imports no TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from servedmodel_exporter.errors import StoreNotWritable
from servedmodel_exporter.store import METADATA

HIDDEN_PREFIX = ".pruning-"


@dataclass(frozen=True)
class Pruned:
    removed: tuple[int, ...]
    kept: tuple[int, ...]  # unprotected versions kept (the newest `keep`)
    protected: tuple[int, ...]  # protected versions present on the store
    not_owned: tuple[int, ...] = ()  # unprotected versions whose record names no such owner


def versions(model_dir: Path) -> list[int]:
    return (
        sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
        if model_dir.is_dir()
        else []
    )


def owner(version_dir: Path) -> str | None:
    """The owner UID a version's record names (None: no record, unreadable, or no owner)."""
    try:
        record = json.loads((version_dir / METADATA).read_text())
    except (OSError, ValueError):
        return None
    found = record.get("ownerUid") if isinstance(record, dict) else None
    return found if isinstance(found, str) and found else None


def prune(store: Path, model_name: str, keep: int, protect: set[int], owner_uid: str) -> Pruned:
    if not owner_uid:
        raise ValueError("owner_uid is required: only versions recorded as its own are removed")
    model_dir = store / model_name
    present = versions(model_dir)
    unprotected = [v for v in present if v not in protect]
    not_owned = tuple(v for v in unprotected if owner(model_dir / str(v)) != owner_uid)
    owned = sorted((v for v in unprotected if v not in not_owned), reverse=True)
    kept, doomed = owned[:keep], owned[keep:]
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
        not_owned=not_owned,
    )
