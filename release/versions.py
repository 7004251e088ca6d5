"""One version per release: pyproject.toml's. Everything else that names it must agree.

    python -m release.versions [--tag vX.Y.Z] [--github-output FILE]

checks the git tag (when given: `v` + the version), the chart's version and appVersion (its
image tags default to appVersion and must not be pinned otherwise), and manifests/base/'s
image tag (kustomization.yaml), operator image and exporter image (operator.yaml) and allowed
exporter images (policy.yaml), the `?ref=` tags manifests/*/kustomization.yaml show, and every
image tag the README shows. It prints the version and
the two image names, or every disagreement on stderr and exits 1. With --github-output it also
writes version=, operator_image= and exporter_image= lines there (the release workflow's step
outputs). Needs only PyYAML.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
CHART = Path("charts/servedmodel")
BASE = Path("manifests/base")


@dataclass(frozen=True)
class Release:
    version: str
    operator_repository: str
    exporter_repository: str

    @property
    def operator_image(self) -> str:
        return f"{self.operator_repository}:{self.version}"

    @property
    def exporter_image(self) -> str:
        return f"{self.exporter_repository}:{self.version}"


def package_version(repo: Path = REPO) -> str:
    """pyproject.toml's [project] version: the one source of truth."""
    with (repo / "pyproject.toml").open("rb") as f:
        version: str = tomllib.load(f)["project"]["version"]
    return version


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def release(repo: Path = REPO) -> Release:
    """The version, and the image repositories of the chart's values (manifests/base/ and the
    operator's own defaults are checked against them)."""
    values = yaml.safe_load((repo / CHART / "values.yaml").read_text())
    return Release(
        version=package_version(repo),
        operator_repository=values["operator"]["image"]["repository"],
        exporter_repository=values["exporter"]["image"]["repository"],
    )


def disagreements(repo: Path = REPO, tag: str | None = None) -> list[str]:
    """Every place that names another version (or image) than pyproject.toml's."""
    want = release(repo)
    version, problems = want.version, []

    def check(where: str, found: object, expected: object) -> None:
        if found != expected:
            problems.append(f"{where}: {found!r}, expected {expected!r}")

    if tag is not None:
        check("the git tag", tag, f"v{version}")

    chart = yaml.safe_load((repo / CHART / "Chart.yaml").read_text())
    check(f"{CHART}/Chart.yaml version", chart.get("version"), version)
    check(f"{CHART}/Chart.yaml appVersion", str(chart.get("appVersion")), version)
    values = yaml.safe_load((repo / CHART / "values.yaml").read_text())
    for part in ("operator", "exporter"):
        # Empty: the chart's appVersion. Anything else would be a second truth.
        check(f"{CHART}/values.yaml {part}.image.tag", values[part]["image"]["tag"], "")

    kustomization = yaml.safe_load((repo / BASE / "kustomization.yaml").read_text())
    check(
        f"{BASE}/kustomization.yaml images",
        kustomization.get("images"),
        [{"name": want.operator_repository, "newTag": version}],
    )
    [deployment] = [d for d in _docs(repo / BASE / "operator.yaml") if d["kind"] == "Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    check(f"{BASE}/operator.yaml image", container["image"], want.operator_image)
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    check(
        f"{BASE}/operator.yaml SERVEDMODEL_EXPORTER_IMAGE",
        env.get("SERVEDMODEL_EXPORTER_IMAGE"),
        want.exporter_image,
    )
    [policy] = _docs(repo / BASE / "policy.yaml")
    check(
        f"{BASE}/policy.yaml SERVEDMODEL_ALLOWED_EXPORTER_IMAGES",
        policy["data"].get("SERVEDMODEL_ALLOWED_EXPORTER_IMAGES"),
        want.exporter_image,
    )

    # Remote bases and components are pinned to the release's tag in their usage comments.
    for path in sorted((repo / "manifests").glob("*/kustomization.yaml")):
        for found in sorted(set(re.findall(r"\?ref=(v[\w.\-]+)", path.read_text()))):
            check(f"{path.relative_to(repo)} ?ref=", found, f"v{version}")

    readme = (repo / "README.md").read_text()
    for repository in (want.operator_repository, want.exporter_repository):
        for found in sorted(set(re.findall(re.escape(repository) + r":([\w.\-]+)", readme))):
            check(f"README.md {repository}", found, version)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m release.versions", description=__doc__)
    parser.add_argument("--tag", help="the git tag being released (vX.Y.Z)")
    parser.add_argument("--github-output", type=Path, help="append step outputs to this file")
    parser.add_argument("--repo", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    problems = disagreements(args.repo, args.tag)
    if problems:
        print(
            f"versions disagree with pyproject.toml's {package_version(args.repo)}:",
            file=sys.stderr,
        )
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    found = release(args.repo)
    outputs = {
        "version": found.version,
        "operator_image": found.operator_image,
        "exporter_image": found.exporter_image,
    }
    for key, value in outputs.items():
        print(f"{key}={value}")
    if args.github_output is not None:
        with args.github_output.open("a") as out:
            out.writelines(f"{key}={value}\n" for key, value in outputs.items())
    return 0


if __name__ == "__main__":
    sys.exit(main())
