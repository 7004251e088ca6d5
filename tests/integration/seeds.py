"""Versions exported ahead of a test, for the tests that do not test exporting.

Exporting is tested where it is the point (test_exports.py, test_object_store.py, the unsafe
model of test_tenancy.py, the CLI's progress lines, the install and RBAC paths, the serving
scenarios). Elsewhere a test starts from the state an operator finds after an upgrade, a
restore or an adoption (bench/convergence.py measures from the same state): the store holds
the versions, written by the real exporter, and the ServedModel's status records their export.

- `export_once` runs servedmodel-export's own code on each tiny model once per session, in
  one child process (one TensorFlow import).
- `keras_models` saves a module's own Keras models in one child process, `export_models`
  exports them once; `create_pair` creates a ServedModel of two of them (versions 1 and 2)
  exported already, then starts the operator.
- `create_exported` creates a ServedModel, copies each declared version's SavedModel into
  the test's store with the record the exporter would have written for this owner and
  version (exporter/servedmodel_exporter/store.py), and records the exports in its status
  (the status subresource, written after the create) before any operator sees the object:
  an operator running meanwhile would start the exporter Jobs this spares. Start the
  operator after it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client

from testing.localcluster.operator_process import OperatorProcess
from tests.integration.helpers import GROUP, PLURAL, VERSION, Volume, create, servedmodel

# The exporter's record in each version directory (exporter/servedmodel_exporter/store.py).
RECORD = Path("assets.extra") / "servedmodel-export.json"
# What of an export result the operator keeps in status (parts/exports/states.py).
RESULT_FIELDS = ("signature", "verification", "sourceSha256", "tensorflowVersion", "exportedAt")


@dataclass(frozen=True)
class Exported:
    """One source exported by servedmodel-export: its version directory and its result."""

    directory: Path
    result: dict[str, Any]


def export_once(sources: Mapping[str, Path], out: Path) -> dict[str, Exported]:
    """Export each source (name -> Keras file) with the real exporter, as a Job would run it
    (same defaults: 8 samples, verification, no warmup), all in one child process."""
    requests = {name: str(path) for name, path in sources.items()}
    script = f"""
import json, sys
from pathlib import Path
from servedmodel_exporter.export import Request, run
results = {{}}
for i, (name, source) in enumerate({requests!r}.items(), start=1):
    results[name] = run(Request(source=source, store=Path({str(out)!r}), model_name="seed",
                                version=i))
print(json.dumps(results))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    return {name: Exported(Path(r["path"]), r) for name, r in results.items()}


def seed_version(
    store: Volume, model_name: str, version: int, exported: Exported, owner_uid: str
) -> dict[str, Any]:
    """Copy an exported version into the store as <model>/<version>, its record rewritten for
    this model, version and owner (the record is outside the files' manifest, so the version
    still verifies); the status entry its export would have left."""
    target = store.path / model_name / str(version)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(exported.directory, target)
    record = json.loads((target / RECORD).read_text())
    record.update(modelName=model_name, version=version, ownerUid=owner_uid, path=str(target))
    (target / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True))
    return {
        "version": version,
        "state": "Exported",
        **{k: exported.result[k] for k in RESULT_FIELDS},
    }


def create_exported(
    custom: client.CustomObjectsApi,
    namespace: str,
    body: dict[str, Any],
    exported: Mapping[str, Exported],
    store: Volume,
    operator: OperatorProcess,
) -> dict[str, Any]:
    """Create the ServedModel `body` with every declared version already exported: each
    version's source file name (pvc://training/model-a.keras -> model-a.keras) names its export
    in `exported`. The operator must not be running yet (see the module's docstring)."""
    assert not operator.running(), "start the operator after create_exported"
    created = create(custom, namespace, body)
    name, uid = created["metadata"]["name"], created["metadata"]["uid"]
    model_name = body["spec"].get("modelName", name)
    versions = [
        seed_version(
            store,
            model_name,
            entry["version"],
            exported[entry["source"]["uri"].rsplit("/", 1)[-1]],
            uid,
        )
        for entry in body["spec"]["versions"]
    ]
    patched: dict[str, Any] = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, PLURAL, name, {"status": {"versions": versions}}
    )
    return patched


def keras_models(script: str, out: Path) -> dict[str, Path]:
    """Run `script`, Keras code that saves models into `out`, in a child process (TensorFlow
    stays out of the test process); every file it saved, by stem."""
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return {p.stem: p for p in out.iterdir()}


def export_models(models: Mapping[str, Path], out: Path) -> dict[str, Exported]:
    """Every model of `keras_models` exported once by the real exporter, by file name."""
    return export_once({f"{stem}.keras": path for stem, path in models.items()}, out)


def create_pair(
    custom: client.CustomObjectsApi,
    namespace: str,
    operator: OperatorProcess,
    store: Volume,
    training: Volume,
    models: Mapping[str, Path],
    exported: Mapping[str, Exported],
    name: str,
    files: str,
    **spec: Any,
) -> None:
    """The ServedModel `name` with versions 1 and 2 of `files` (the models <files>-1 and
    <files>-2, copied to the training volume) exported already; then the operator."""
    for version in (1, 2):
        source = f"{files}-{version}"
        (training.path / f"{source}.keras").write_bytes(models[source].read_bytes())
    body = servedmodel(
        name,
        [(1, f"pvc://training/{files}-1.keras"), (2, f"pvc://training/{files}-2.keras")],
        **spec,
    )
    create_exported(custom, namespace, body, exported, store, operator)
    operator.start()
