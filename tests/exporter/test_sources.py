"""Sources are untrusted: a size limit checked while they stream, a checksum over exactly the
copy that is loaded (README's manifest for directories), no symlinks inside them, no redirect
followed out of the source's origin."""

from __future__ import annotations

import hashlib
import itertools
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servedmodel_exporter.errors import SourceTooLarge, UnsafeModel
from servedmodel_exporter.sources import objectstore
from servedmodel_exporter.sources.transfer import Download

from tests.exporter.helpers import REPO, export, failure, server_of, serving

MIB = 1 << 20


def _readme_manifest_command() -> str:
    """The shell one-liner README gives for a directory's SHA-256, as README gives it."""
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- manifest-command -->", 1)[1].split("```sh\n", 1)[1]
    return block.split("```", 1)[0]


# --- the checksum -------------------------------------------------------------------------------


def test_a_file_checksum_is_what_sha256sum_prints(models: dict[str, Path], tmp_path: Path) -> None:
    printed = subprocess.run(
        ["sha256sum", str(models["h5"])], capture_output=True, text=True, check=True
    ).stdout.split()[0]
    done = export(str(models["h5"]), tmp_path / "s", tmp_path / "r.json", "--sha256", printed)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["sourceSha256"] == printed


@pytest.mark.parametrize("fixture", ["tf_savedmodel", "keras2_savedmodel", "keras_dir"])
def test_a_directory_checksum_is_what_the_readme_command_prints(
    fixture: str, models: dict[str, Path], tmp_path: Path
) -> None:
    printed = subprocess.run(
        ["bash", "-c", _readme_manifest_command()],
        cwd=models[fixture],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    assert len(printed) == 64
    done = export(str(models[fixture]), tmp_path / "s", tmp_path / "r.json", "--sha256", printed)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "r.json").read_text())["sourceSha256"] == printed


def test_a_directory_checksum_covers_names_and_contents(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from servedmodel_exporter import manifest

    copy = tmp_path / "copy"
    shutil.copytree(models["tf_savedmodel"], copy)
    before = manifest.of_directory(copy)
    (copy / "fingerprint.pb").rename(copy / "fingerprint.pb.renamed")
    renamed = manifest.of_directory(copy)
    (copy / "fingerprint.pb.renamed").write_bytes(b"changed")
    assert len({before, renamed, manifest.of_directory(copy)}) == 3


# --- symlinks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["file", "directory"])
def test_a_symlink_inside_a_source_directory_is_refused(
    target: str, models: dict[str, Path], tmp_path: Path
) -> None:
    source = tmp_path / "savedmodel"
    shutil.copytree(models["tf_savedmodel"], source)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not for the store")
    (source / "assets" / "leak").symlink_to(outside / "secret" if target == "file" else outside)
    result = failure(
        export(str(source), tmp_path / "s", tmp_path / "r.json"),
        tmp_path / "r.json",
        22,
        "UnsafeModel",
    )
    assert "assets/leak is a symlink" in result["message"]
    assert not (tmp_path / "s" / "m" / "1").exists()


def test_the_source_path_itself_may_be_a_symlink(models: dict[str, Path], tmp_path: Path) -> None:
    link = tmp_path / "current.keras"
    link.symlink_to(models["sequential"])
    done = export(str(link), tmp_path / "s", tmp_path / "r.json")
    assert done.returncode == 0, done.stderr


# --- the size limit ------------------------------------------------------------------------------


def test_the_limit_stops_a_stream_as_soon_as_it_is_passed(tmp_path: Path) -> None:
    consumed = itertools.count()

    def endless() -> Iterator[bytes]:
        while True:
            next(consumed)
            yield b"\0" * MIB

    download = Download("http://example.test/model.keras", limit=3 * MIB)
    with pytest.raises(SourceTooLarge, match="--max-source-bytes 3145728"):
        download.copy(endless(), tmp_path / "model.keras", "model.keras")
    assert next(consumed) == 4  # the fourth mebibyte passed the limit; nothing more was read
    assert (tmp_path / "model.keras").stat().st_size == 3 * MIB


@pytest.mark.parametrize("fixture", ["sequential", "tf_savedmodel"])
def test_a_local_source_over_the_limit_is_source_too_large(
    fixture: str, models: dict[str, Path], tmp_path: Path
) -> None:
    result = failure(
        export(
            str(models[fixture]), tmp_path / "s", tmp_path / "r.json", "--max-source-bytes", "1000"
        ),
        tmp_path / "r.json",
        23,
        "SourceTooLarge",
    )
    assert "--max-source-bytes 1000" in result["message"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_http_source_over_the_limit_is_source_too_large(chunked: bool, tmp_path: Path) -> None:
    body = b"\0" * (64 * MIB)
    with serving({"/big.keras": body}, chunked=chunked) as url:
        failure(
            export(
                f"{url}/big.keras",
                tmp_path / "s",
                tmp_path / "r.json",
                "--max-source-bytes",
                str(MIB),
            ),
            tmp_path / "r.json",
            23,
            "SourceTooLarge",
        )


def _memory_store(files: dict[str, bytes], reported_size: int | None = None) -> Any:
    """An fsspec in-memory object store; reported_size makes its listings lie about sizes."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class Lying(MemoryFileSystem):  # type: ignore[misc]
        def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
            info: dict[str, Any] = super().info(path, **kwargs)
            if reported_size is not None and info.get("type") == "file":
                info["size"] = reported_size
            return info

    fs = Lying() if reported_size is not None else fsspec.filesystem("memory")
    fs.store.clear()
    for key, value in files.items():
        fs.pipe(key, value)
    return fs


@pytest.mark.parametrize("prefix", [False, True], ids=["object", "prefix"])
def test_an_object_store_source_is_limited_while_it_streams(prefix: bool, tmp_path: Path) -> None:
    """Even when the store's listing understates the size, the bytes are counted."""
    fs = _memory_store({"/bucket/model/part": b"\0" * (8 * MIB)}, reported_size=1)
    download = Download("s3://bucket/model", limit=2 * MIB)
    path = "/bucket/model" if prefix else "/bucket/model/part"
    with pytest.raises(SourceTooLarge):
        objectstore.copy(fs, path, tmp_path / "model", download)
    assert download.received <= 3 * MIB


def test_an_object_store_listing_over_the_limit_fails_before_the_first_byte(
    tmp_path: Path,
) -> None:
    fs = _memory_store({"/bucket/model/a": b"\0" * MIB, "/bucket/model/b": b"\0" * MIB})
    download = Download("s3://bucket/model", limit=MIB + 1)
    with pytest.raises(SourceTooLarge):
        objectstore.copy(fs, "/bucket/model", tmp_path / "model", download)
    assert download.received == 0


def test_an_object_key_that_leaves_its_prefix_is_refused(tmp_path: Path) -> None:
    fs = _memory_store({"/bucket/model/saved_model.pb": b"x", "/bucket/model/../evil": b"y"})
    with pytest.raises(UnsafeModel, match="leaves its directory"):
        objectstore.copy(fs, "/bucket/model", tmp_path / "model", Download("s3://b/m", MIB))
    assert not (tmp_path / "evil").exists()


def test_an_object_store_prefix_copies_with_its_manifest(tmp_path: Path) -> None:
    from servedmodel_exporter import manifest

    files = {"/bucket/model/saved_model.pb": b"graph", "/bucket/model/variables/v.data": b"w" * 9}
    download = Download("s3://bucket/model", limit=MIB)
    target = objectstore.copy(_memory_store(files), "/bucket/model", tmp_path / "model", download)
    assert (target / "variables" / "v.data").read_bytes() == b"w" * 9
    assert download.sha256(target) == manifest.of_directory(target)
    assert (
        download.sha256(target)
        == hashlib.sha256(
            b"saved_model.pb 5 " + hashlib.sha256(b"graph").hexdigest().encode() + b"\n"
            b"variables/v.data 9 " + hashlib.sha256(b"w" * 9).hexdigest().encode() + b"\n"
        ).hexdigest()
    )


# --- redirects -----------------------------------------------------------------------------------


def test_a_redirect_within_the_origin_is_followed(models: dict[str, Path], tmp_path: Path) -> None:
    body = models["sequential"].read_bytes()
    files = {"/models/model.keras": body}
    with server_of(files, redirects={"/old/model.keras": "/models/model.keras"}) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = export(f"{url}/old/model.keras", tmp_path / "s", tmp_path / "r.json")
        assert done.returncode == 0, done.stderr
        assert server.requests == ["/old/model.keras", "/models/model.keras"]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["sourceSha256"] == hashlib.sha256(body).hexdigest()


@pytest.mark.parametrize("elsewhere", ["another-host-name", "another-port", "another-scheme"])
def test_a_redirect_to_another_origin_is_refused_and_never_followed(
    elsewhere: str, models: dict[str, Path], tmp_path: Path
) -> None:
    """The spec names the URL fetched from; a server may not turn it into a request to an
    address of its choice (an internal service, a metadata endpoint)."""
    body = models["sequential"].read_bytes()
    with server_of({"/model.keras": body}) as other, server_of({}) as origin:
        port = origin.server_address[1]
        location = {
            # The same machine and port under another name: still another origin.
            "another-host-name": f"http://localhost:{port}/model.keras",
            "another-port": f"http://127.0.0.1:{other.server_address[1]}/model.keras",
            "another-scheme": f"https://127.0.0.1:{port}/model.keras",
        }[elsewhere]
        origin.redirects["/model.keras"] = location
        result = failure(
            export(f"http://127.0.0.1:{port}/model.keras", tmp_path / "s", tmp_path / "r.json"),
            tmp_path / "r.json",
            11,
            "SourceNotFound",
        )
        assert origin.requests == ["/model.keras"]  # asked once, not again under the name
        assert other.requests == []  # and the other origin was never asked
    assert f"redirects to {location}" in result["message"]
    assert "another origin" in result["message"]
    assert not (tmp_path / "s" / "m" / "1").exists()


def test_a_redirect_loop_within_the_origin_ends(tmp_path: Path) -> None:
    with server_of({}, redirects={"/a": "/b", "/b": "/a"}) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}/a"
        result = failure(
            export(url, tmp_path / "s", tmp_path / "r.json"),
            tmp_path / "r.json",
            11,
            "SourceNotFound",
        )
        assert len(server.requests) == 6
    assert "more than 5 redirects" in result["message"]
