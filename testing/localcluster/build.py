"""Build the local control plane's binaries from Go modules, once, into a cache outside the repo.

Kubernetes' own go.mod replaces every staging module (k8s.io/api, client-go, …) with a path
inside its source tree, so `go install k8s.io/kubernetes/cmd/...@vX` refuses to build. The fix
is a throwaway wrapper module that requires k8s.io/kubernetes and replaces each staging module
with its published v0.Y.Z twin. etcd's server module has the same problem with its sibling
modules. kwok builds as it is.

Tools built the same way, cached the same way: SeaweedFS (the object-store tests' S3 server),
Helm (the chart's tests), actionlint (`make lint`), Prometheus and promtool (the alert rules'
tests); and the Gateway API's CRDs, copied out of their module (nothing to compile). TF
Serving's own end-to-end suite (`tfserving-suite`) is cached the same way, copied out of a git
repository of tensorflow/serving on first use by its test (no registry ships it; see
build_tfserving_suite()).

Each component lands in `<cache>/<component>-<version>/`, written to a temporary directory and
renamed into place only when complete, so an interrupted build is simply redone.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
VERSIONS_FILE = HERE / "versions.env"

KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
# kwok's stock stages, taken from its own module at build time (never committed here).
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def versions() -> dict[str, str]:
    """The NAME_VERSION pairs of versions.env."""
    pairs = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def cache_root() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "servedmodel"
    return Path(os.environ.get("SERVEDMODEL_CACHE", default))


def component_dir(component: str, version: str) -> Path:
    return cache_root() / f"{component}-{version}"


def kubernetes_dir() -> Path:
    return component_dir("kubernetes", versions()["KUBERNETES_VERSION"])


def etcd_dir() -> Path:
    return component_dir("etcd", versions()["ETCD_VERSION"])


def kwok_dir() -> Path:
    return component_dir("kwok", versions()["KWOK_VERSION"])


def _log(message: str) -> None:
    print(f"[localcluster] {message}", file=sys.stderr, flush=True)


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-buildvcs=false -mod=mod")
    return env


def _go(args: list[str], cwd: Path) -> str:
    result = subprocess.run(
        ["go", *args], cwd=cwd, env=_go_env(), text=True, capture_output=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"go {' '.join(args)} failed:\n{result.stderr[-4000:]}")
    return result.stdout


def _module_info(module: str, version: str, cwd: Path) -> dict[str, str]:
    info: dict[str, str] = json.loads(_go(["mod", "download", "-json", f"{module}@{version}"], cwd))
    return info


def _go_directive(gomod_text: str) -> str:
    for line in gomod_text.splitlines():
        if line.startswith("go "):
            return line.split()[1]
    raise RuntimeError("go.mod without a go directive")


def _module(module: str, version: str, work: Path) -> tuple[Path, str]:
    """(source directory, go.mod text) of module@version, from the module proxy."""
    (work / "go.mod").write_text("module testing/localcluster/probe\n")
    info = _module_info(module, version, work)
    return Path(info["Dir"]), Path(info["GoMod"]).read_text()


def _wrapper_build(
    work: Path,
    out: Path,
    *,
    gomod: str,
    replaces: dict[str, str],
    packages: dict[str, str],
    version: str,
    ldflags: str = "-s -w",
    tags: str = "",
) -> None:
    """Build `packages` (import path -> binary name) at `version` from a wrapper module that
    requires them and carries `replaces` (module -> "module version" it is replaced with)."""
    lines = ["module testing/localcluster/wrapper", "", f"go {_go_directive(gomod)}", ""]
    lines += [f"replace {mod} => {target}" for mod, target in sorted(replaces.items())]
    (work / "go.mod").write_text("\n".join(lines) + "\n")
    _go(["get", "-tool", *[f"{pkg}@{version}" for pkg in packages]], work)
    for pkg, binary in packages.items():
        tagged = ["-tags", tags] if tags else []
        _go(
            ["build", "-trimpath", *tagged, "-ldflags", ldflags, "-o", str(out / binary), pkg],
            work,
        )


def _replaced_lines(gomod: str, marker: str) -> list[tuple[str, list[str]]]:
    """(module, target words) of every live `replace` line whose target contains marker."""
    out = []
    for line in gomod.splitlines():
        text = line.strip().removeprefix("replace").strip()
        if "=>" in text and marker in text and not line.strip().startswith("//"):
            old, new = (part.split() for part in text.split("=>"))
            out.append((old[0], new))
    return out


def _missing(target: Path, files: Sequence[str]) -> list[str]:
    return [name for name in files if not (target / name).exists()]


def _install(target: Path, build: Callable[[Path, Path], None], files: Sequence[str] = ()) -> Path:
    """Run build(tmpdir) and move the result to target atomically. A target that exists is
    complete, unless it lacks one of `files` (the component builds more than when it was
    cached, or another checkout's older code built it meanwhile): then what was missing moves
    in, each file atomically."""
    missing = _missing(target, files)
    if target.exists() and not missing:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as tmp:
        out = Path(tmp) / "out"
        out.mkdir()
        build(Path(tmp), out)
        if not target.exists():
            try:
                os.replace(out, target)
                return target
            except OSError:
                # Another checkout built the same component meanwhile (the cache is shared):
                # theirs is as good as ours, less what it lacks (below).
                if not target.is_dir():
                    raise
        for name in _missing(target, files):
            os.replace(out / name, target / name)
    return target


def _build_go(
    target: Path,
    what: str,
    module: str,
    version: str,
    packages: dict[str, str],
    *,
    replaces: Callable[[str], dict[str, str]] = lambda gomod: {},
    ldflags: str = "-s -w",
    then: Callable[[Path, Path], None] | None = None,
    note: str = "",
) -> Path:
    """Build `packages` of module@version through a wrapper module (_wrapper_build) into target,
    once. replaces(go.mod text of the module) gives the wrapper's replace lines; then(module
    source, out) copies anything else the component needs out of the module; note ends the
    log line."""

    def build(work: Path, out: Path) -> None:
        _log(f"building {what} {version}{note}")
        source, gomod = _module(module, version, work)
        _wrapper_build(
            work,
            out,
            gomod=gomod,
            replaces=replaces(gomod),
            version=version,
            packages=packages,
            ldflags=ldflags,
        )
        if then is not None:
            then(source, out)

    return _install(target, build)


def build_kubernetes() -> Path:
    version = versions()["KUBERNETES_VERSION"]
    major, minor, patch = version.lstrip("v").split(".")[:3]

    def staging(gomod: str) -> dict[str, str]:
        # Every `k8s.io/x => ./staging/src/k8s.io/x` becomes its published v0.Y.Z twin.
        return {mod: f"{mod} v0.{minor}.{patch}" for mod, _ in _replaced_lines(gomod, "./staging/")}

    ldflags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        ldflags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return _build_go(
        kubernetes_dir(),
        "Kubernetes",
        "k8s.io/kubernetes",
        version,
        {f"k8s.io/kubernetes/cmd/{cmd}": cmd for cmd in KUBE_COMMANDS},
        replaces=staging,
        ldflags=" ".join(ldflags),
        note=" (first time only; 10-20 min on 2 cores)",
    )


def build_etcd() -> Path:
    version = versions()["ETCD_VERSION"]

    def siblings(gomod: str) -> dict[str, str]:
        # server/v3's go.mod points its sibling modules at ../api, ../pkg, …: pin them instead.
        return {
            mod: f"{mod} {version}"
            for mod, new in _replaced_lines(gomod, "../")
            if new[0].startswith("../")
        }

    return _build_go(
        etcd_dir(),
        "etcd",
        "go.etcd.io/etcd/server/v3",
        version,
        {"go.etcd.io/etcd/server/v3": "etcd"},
        replaces=siblings,
    )


def build_kwok() -> Path:
    version = versions()["KWOK_VERSION"]

    def stages(source: Path, out: Path) -> None:
        (out / "stages").mkdir()
        for rel in KWOK_STAGES:
            shutil.copyfile(source / rel, out / "stages" / Path(rel).name)

    return _build_go(
        kwok_dir(),
        "kwok",
        "sigs.k8s.io/kwok",
        version,
        {"sigs.k8s.io/kwok/cmd/kwok": "kwok"},
        ldflags=f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={version.lstrip('v')}",
        then=stages,
    )


def seaweedfs_dir() -> Path:
    return component_dir("seaweedfs", versions()["SEAWEEDFS_VERSION"])


def build_seaweedfs() -> Path:
    """SeaweedFS's `weed`: a real S3-compatible server for the object-store source tests."""

    def forks(gomod: str) -> dict[str, str]:
        # Its go.mod swaps one dependency for a fork; a wrapper module must say so too.
        return {mod: " ".join(new) for mod, new in _replaced_lines(gomod, " ") if len(new) == 2}

    return _build_go(
        seaweedfs_dir(),
        "SeaweedFS",
        "github.com/seaweedfs/seaweedfs",
        versions()["SEAWEEDFS_VERSION"],
        {"github.com/seaweedfs/seaweedfs/weed": "weed"},
        replaces=forks,
        note=" (first time only)",
    )


def helm_dir() -> Path:
    return component_dir("helm", versions()["HELM_VERSION"])


def build_helm() -> Path:
    """Helm (`helm lint`, `helm template`, `helm install` of charts/servedmodel in the tests)."""
    version = versions()["HELM_VERSION"]
    major = version.lstrip("v").split(".")[0]
    meta = f"helm.sh/helm/v{major}/internal/version"
    return _build_go(
        helm_dir(),
        "Helm",
        f"helm.sh/helm/v{major}",
        version,
        {f"helm.sh/helm/v{major}/cmd/helm": "helm"},
        # What Helm's Makefile sets for a tagged release (`helm version` prints it).
        ldflags=f"-s -w -X {meta}.version={version} -X {meta}.metadata= "
        f"-X {meta}.gitTreeState=clean",
    )


def actionlint_dir() -> Path:
    return component_dir("actionlint", versions()["ACTIONLINT_VERSION"])


def build_actionlint() -> Path:
    """actionlint, the GitHub Actions workflow checker `make lint` runs."""
    version = versions()["ACTIONLINT_VERSION"]
    return _build_go(
        actionlint_dir(),
        "actionlint",
        "github.com/rhysd/actionlint",
        version,
        {"github.com/rhysd/actionlint/cmd/actionlint": "actionlint"},
        ldflags=f"-s -w -X github.com/rhysd/actionlint.version={version}",
    )


def prometheus_dir() -> Path:
    return component_dir("prometheus", versions()["PROMETHEUS_VERSION"])


# Service discovery: file, HTTP and static targets always; of the optional mechanisms only
# Kubernetes' (pods of the local cluster). The cloud ones (AWS, Azure, GCE, ...) are left out,
# which also leaves their SDKs out of the build.
PROMETHEUS_TAGS = "remove_all_sd,enable_kubernetes_sd"


# What the prometheus component builds: the server (rollout analysis in tests and the demo) and
# promtool (`promtool check rules` / `promtool test rules` on manifests/monitoring/).
PROMETHEUS_COMMANDS = {
    "github.com/prometheus/prometheus/cmd/prometheus": "prometheus",
    "github.com/prometheus/prometheus/cmd/promtool": "promtool",
}


def build_prometheus() -> Path:
    """The Prometheus server, without its web UI's assets (no `builtinassets` tag: the UI pages
    answer with an error; the HTTP API, /api/v1/..., is whole), and promtool. A cached
    component from before promtool was added gets promtool alone."""
    version = versions()["PROMETHEUS_VERSION"]
    target = prometheus_dir()

    def build(work: Path, out: Path) -> None:
        source, gomod = _module("github.com/prometheus/prometheus", version, work)
        # Module v0.3XX.Y is Prometheus 3.XX.Y; the module says which in its VERSION file.
        release = (source / "VERSION").read_text().strip()
        wanted = _missing(target, list(PROMETHEUS_COMMANDS.values()))
        _log(f"building Prometheus {release}: {', '.join(wanted)} (module {version}; once)")
        meta = "github.com/prometheus/common/version"
        _wrapper_build(
            work,
            out,
            gomod=gomod,
            replaces={},
            version=version,
            packages={pkg: name for pkg, name in PROMETHEUS_COMMANDS.items() if name in wanted},
            ldflags=f"-s -w -X {meta}.Version={release} -X {meta}.Branch=HEAD "
            f"-X {meta}.Revision={version}",
            tags=PROMETHEUS_TAGS,
        )

    return _install(target, build, list(PROMETHEUS_COMMANDS.values()))


def gateway_api_dir() -> Path:
    return component_dir("gateway-api", versions()["GATEWAY_API_VERSION"])


def gateway_api_crds() -> list[Path]:
    """The Gateway API's standard-channel manifests (its module's config/crd/standard/*.yaml:
    the CRDs and the ValidatingAdmissionPolicy that guards them against an experimental
    install), in file-name order; fetched on first use."""
    return sorted(build_gateway_api().glob("*.yaml"))


def build_gateway_api() -> Path:
    """Copy the standard-channel CRDs out of the sigs.k8s.io/gateway-api module zip (nothing
    to compile; the files are never committed here)."""
    version = versions()["GATEWAY_API_VERSION"]

    def build(work: Path, out: Path) -> None:
        _log(f"fetching the Gateway API {version} CRDs")
        source, _ = _module("sigs.k8s.io/gateway-api", version, work)
        files = sorted((source / "config/crd/standard").glob("*.yaml"))
        if not files:
            raise RuntimeError(f"sigs.k8s.io/gateway-api {version}: no config/crd/standard/")
        for path in files:
            shutil.copyfile(path, out / path.name)

    return _install(gateway_api_dir(), build)


# --- TF Serving's own end-to-end suite (not built: its files are copied out of git) ------------

# tensorflow/serving holds no Go module and no registry ships its test files (tensorflow-serving-api
# is a wheel of generated protos only, with no sdist), so they are read from a git repository of
# tensorflow/serving: SERVEDMODEL_TFSERVING_GIT names one (a clone's path, a bare git directory,
# or a URL git can fetch a commit from, e.g. https://github.com/tensorflow/serving.git where
# GitHub is reachable); without it, the development machines' read-only copy below. The pinned
# commit (versions.env) makes any of them give the same bytes.
TFSERVING_GIT_VARIABLE = "SERVEDMODEL_TFSERVING_GIT"
TFSERVING_GIT_DEFAULT = "/work/.mirror/tensorflow+serving/repo"
_TESTDATA = "tensorflow_serving/servables/tensorflow/testdata"
# The suite, its test base, and the testdata its in-scope tests read (the test's BUILD `data`
# less the TFLite models and tf_text_regression, read only by tests that stay out of scope).
TFSERVING_SUITE_PATHS = (
    "LICENSE",
    "tensorflow_serving/model_servers/tensorflow_model_server_test.py",
    "tensorflow_serving/model_servers/test_util/tensorflow_model_server_test_base.py",
    *(
        f"{_TESTDATA}/{name}"
        for name in (
            "bad_half_plus_two",
            "bad_model_config.txt",
            "batching_config.txt",
            "good_model_config.txt",
            "half_plus_two_model_metadata.json",
            "monitoring_config.txt",
            "saved_model_half_plus_three",
            "saved_model_half_plus_two_cpu",
            "saved_model_half_plus_two_tf2_cpu",
        )
    ),
)


def tfserving_suite_dir() -> Path:
    return component_dir("tfserving-suite", versions()["TFSERVING_SUITE_COMMIT"][:12])


def _git(args: list[str], source: str, binary: bool = False) -> bytes:
    result = subprocess.run(["git", "-C", source, *args], capture_output=True, check=False)
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"git {' '.join(args[:2])}: {message[-1] if message else 'failed'}")
    return result.stdout


def _copy_tree_files(source: str, commit: str, paths: tuple[str, ...], out: Path) -> None:
    """Write `paths` (files, or folders taken whole) of `commit` under out/, from the git
    repository at `source`; raise if the commit, a path or one of its blobs is missing."""
    _git(["cat-file", "-e", f"{commit}^{{commit}}"], source)
    listing = _git(["ls-tree", "-r", "-z", commit, "--", *paths], source)
    entries = [e for e in listing.decode().split("\0") if e]
    found: set[str] = set()
    for entry in entries:
        meta, path = entry.split("\t", 1)
        mode, kind, oid = meta.split()
        if kind != "blob":
            raise RuntimeError(f"{path}: a {kind} at {commit}, not a file")
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git(["cat-file", "blob", oid], source))
        target.chmod(0o755 if mode == "100755" else 0o644)
        found.update(p for p in paths if path == p or path.startswith(p + "/"))
    missing = sorted(set(paths) - found)
    if missing:
        raise RuntimeError(f"not at {commit}: {', '.join(missing)}")


def _fetch_commit(url: str, commit: str, work: Path) -> str:
    """A bare repository under work/ holding `commit` fetched from `url` (shallow)."""
    bare = work / "tfserving.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    _git(["fetch", "-q", "--depth=1", url, commit], str(bare))
    return str(bare)


def build_tfserving_suite() -> Path:
    """TF Serving's tensorflow_model_server_test.py, its test base and testdata at the pinned
    commit, copied into the cache once (never into this repository). Raises, naming every
    source tried, when no source has them."""
    commit = versions()["TFSERVING_SUITE_COMMIT"]

    def build(work: Path, out: Path) -> None:
        configured = os.environ.get(TFSERVING_GIT_VARIABLE, "")
        sources = [configured] if configured else [TFSERVING_GIT_DEFAULT]
        failures = []
        for source in sources:
            try:
                local = source
                if "://" in source or source.startswith("git@"):
                    local = _fetch_commit(source, commit, work)
                elif not Path(source).is_dir():
                    raise RuntimeError("no such directory")
                _log(f"copying TF Serving's end-to-end suite at {commit[:12]} from {source}")
                _copy_tree_files(local, commit, TFSERVING_SUITE_PATHS, out)
                return
            except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
                failures.append(f"  {source}: {exc}")
        raise RuntimeError(
            "TF Serving's end-to-end suite (tensorflow/serving at "
            f"{commit}) could not be obtained:\n"
            + "\n".join(failures)
            + f"\nSet {TFSERVING_GIT_VARIABLE} to a git repository of tensorflow/serving that "
            "has this commit: a clone's path, or https://github.com/tensorflow/serving.git "
            "where GitHub is reachable. No package registry ships these files."
        )

    return _install(tfserving_suite_dir(), build)


# What `cluster.up()` needs; everything else is built by
# `python -m testing.localcluster build` (all)
# or on first use.
CONTROL_PLANE = ("etcd", "kwok", "kubernetes")
# Everything `python -m testing.localcluster build [NAME ...]` can build, in build_all()'s order.
COMPONENTS: dict[str, Callable[[], Path]] = {
    "etcd": build_etcd,
    "kwok": build_kwok,
    "kubernetes": build_kubernetes,
    "seaweedfs": build_seaweedfs,  # the object-store tests' S3 server
    "helm": build_helm,  # the chart's tests
    "actionlint": build_actionlint,  # make lint
    "prometheus": build_prometheus,
    "gateway-api": build_gateway_api,
    "tfserving-suite": build_tfserving_suite,  # TF Serving's own suite (tests/standin)
}
# Obtained on first use only (by its test), never by a bare `build`: a machine without a source
# for it can still build and run the local cluster and the demo.
ON_FIRST_USE = ("tfserving-suite",)


# `python -m testing.localcluster run TOOL`: the binaries, by the component that holds them.
TOOLS = {
    "kubectl": "kubernetes",
    "helm": "helm",
    "actionlint": "actionlint",
    "prometheus": "prometheus",
    "promtool": "prometheus",
}


def build_all(names: list[str] | None = None) -> None:
    """Build the named components (default: all but ON_FIRST_USE) that are not cached yet."""
    wanted = names or [c for c in COMPONENTS if c not in ON_FIRST_USE]
    if shutil.which("go") is None and any(name not in ON_FIRST_USE for name in wanted):
        raise RuntimeError("the Go toolchain is needed to build the local control plane")
    for name in wanted:
        COMPONENTS[name]()
