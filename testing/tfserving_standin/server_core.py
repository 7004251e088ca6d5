"""ServerCore: the model config, its reloads, version labels, and servable lookups.

Copied from tensorflow_serving/model_servers/server_core.cc:

ReloadConfig(new_config), under one mutex:
1. Transition check: accepted if this is the first config, the same config
   (MessageDifferencer::Equals), or ModelConfigList -> ModelConfigList; otherwise
   FAILED_PRECONDITION "Cannot transition to requested config. It is only legal to transition
   from one ModelConfigList to another." (logged with both configs).
2. An empty config is accepted with "Taking no action for empty config.".
3. ValidateModelConfigList (unique names, absolute base paths) and
   ValidateNoModelsChangePlatforms.
4. config_ = new_config   <- STORED BEFORE THE LABEL CHECK
5. UpdateModelVersionLabelMap(): every label must point at an AVAILABLE version, except that
   with --allow_version_labels_for_unavailable_models a label may point anywhere unless it
   already exists with a different version (moving an existing label still needs an AVAILABLE
   target). Failure: FAILED_PRECONDITION "Request to assign label to version <v> of model <m>,
   which is not currently available for inference"; the label map is not replaced.
6. Only then "Adding/updating models." and AddModelsViaModelConfigList() ("Finished
   adding/updating models"; "Finished reloading config" only with
   --flush_filesystem_caches=false, the default flushes and returns before it): on the first config
   the source is connected with the fast initial load and the call waits until every model has
   a version AVAILABLE or END ("N servable(s) did not become available: {...}" otherwise); on
   later configs the source config is updated and only brand-new models are waited for.

There is no "same config: skip" shortcut: the same file polled again runs the whole sequence.
So a config that moves an existing label to a version not yet AVAILABLE is stored (step 4),
refused (step 5) before the new version is ever requested (step 6), and every later poll of
the same file is "the same config" and fails the same way: the new version never loads until
the file changes or the server restarts.

At startup the label map does not exist yet, so GetModelVersionForLabel fails and, with the
flag, every label is accepted whatever its version's state; without the flag the first config
fails if it has any label (no version is AVAILABLE before loading starts).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from google.protobuf import text_format

from testing.tfserving_standin import bundle as bundles
from testing.tfserving_standin import logs
from testing.tfserving_standin.growth import ReloadGrowth
from testing.tfserving_standin.manager import AspiredVersion, Handle, Manager
from testing.tfserving_standin.monitor import (
    EventBus,
    ManagerState,
    ServableId,
    ServableRequest,
    ServableStateMonitor,
)
from testing.tfserving_standin.paths import Mounts
from testing.tfserving_standin.source import FileSystemStoragePathSource, ServableToMonitor
from testing.tfserving_standin.status import Code, StatusError, error

TENSORFLOW_PLATFORM = "tensorflow"  # model_platform_types.h kTensorFlowModelPlatform
SRC = "server_core.cc"


def _debug(config: Any) -> str:
    return str(text_format.MessageToString(config))


def _is_relative(uri: str) -> bool:
    """UriIsRelativePath(): no scheme, no host, not absolute."""
    return "://" not in uri and not uri.startswith("/")


class ServerCore:
    def __init__(
        self,
        mounts: Mounts,
        load_options: bundles.LoadOptions,
        *,
        allow_version_labels_for_unavailable_models: bool,
        file_system_poll_wait_seconds: int,
        num_load_threads: int,
        num_initial_load_threads: int,
        max_num_load_retries: int,
        load_retry_interval_micros: int,
        flush_filesystem_caches: bool = True,
    ) -> None:
        from tensorflow_serving.config import model_server_config_pb2

        self._pb = model_server_config_pb2
        self._mounts = mounts
        self._load_options = load_options
        self._allow_unavailable_labels = allow_version_labels_for_unavailable_models
        self._fs_poll_wait = file_system_poll_wait_seconds
        self._num_load_threads = num_load_threads
        self._num_initial_load_threads = num_initial_load_threads
        self._flush_filesystem_caches = flush_filesystem_caches
        self._config_mu = threading.Lock()
        self._config = model_server_config_pb2.ModelServerConfig()
        self._labels_mu = threading.Lock()
        self._labels: dict[str, dict[str, int]] | None = None
        self.bus = EventBus()
        self.monitor = ServableStateMonitor(self.bus)
        self.manager = Manager(
            self.bus, num_load_threads, max_num_load_retries, load_retry_interval_micros
        )
        self._source: FileSystemStoragePathSource | None = None
        # A stand-in test knob, not TF Serving's code: memory kept per reload (growth.py).
        self.growth = ReloadGrowth.from_env()

    # --- config ------------------------------------------------------------------------------

    def config(self) -> Any:
        with self._config_mu:
            copy = self._pb.ModelServerConfig()
            copy.CopyFrom(self._config)
            return copy

    def reload_config(self, new_config: Any) -> None:
        """ServerCore::ReloadConfig(); raises StatusError."""
        with self._config_mu:
            old_case = self._config.WhichOneof("config")
            new_case = new_config.WhichOneof("config")
            is_first = old_case is None
            is_same = self._config == new_config  # MessageDifferencer::Equals
            accept = (
                is_first
                or is_same
                or (old_case == "model_config_list" and new_case == "model_config_list")
            )
            if not accept:
                message = (
                    "Cannot transition to requested config. It is only legal to transition "
                    "from one ModelConfigList to another."
                )
                logs.error(SRC, message)
                logs.error(SRC, "Old config: " + _debug(self._config))
                logs.error(SRC, "New config: " + _debug(new_config))
                raise error(Code.FAILED_PRECONDITION, message)
            if new_case is None:
                logs.info(SRC, "Taking no action for empty config.")
                return
            if new_case == "model_config_list":
                self._validate_model_config_list(new_config.model_config_list)
            if new_case == "model_config_list" and old_case == "model_config_list":
                self._validate_no_platform_changes(
                    self._config.model_config_list, new_config.model_config_list
                )
            stored = self._pb.ModelServerConfig()
            stored.CopyFrom(new_config)
            self._config = stored  # config_ = new_config, before the label check

            self._update_model_version_label_map()

            logs.info(SRC, "Adding/updating models.")
            if new_case == "model_config_list":
                self._add_models_via_model_config_list()
            elif new_case == "custom_model_config":
                # server.cc LoadCustomModelConfig(): LOG(FATAL).
                logs.error(SRC, "ModelServer does not yet support custom model config.")
                os._exit(134)  # LOG(FATAL): abort
            else:
                raise error(Code.INVALID_ARGUMENT, "Invalid ServerModelConfig")
            logs.info(SRC, "Finished adding/updating models")
            if not is_first and not is_same:
                self.growth.reloaded()  # a stand-in test knob (growth.py), not TF Serving's code
            if self._flush_filesystem_caches:
                # `return Env::Default()->FlushFileSystemCaches();` comes before the last log
                # line: with --flush_filesystem_caches (the default) it is never printed.
                return
            logs.info(SRC, "Finished reloading config")

    def _validate_model_config_list(self, config_list: Any) -> None:
        """ValidateModelConfigList() (no model_config_list_root_dir in the model server)."""
        names: set[str] = set()
        for config in config_list.config:
            if config.name in names:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Illegal to list model ",
                    config.name,
                    " multiple times in config list",
                )
            names.add(config.name)
        for config in config_list.config:
            if _is_relative(config.base_path):
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Expected model ",
                    config.name,
                    " to have an absolute path or URI; got base_path()=",
                    config.base_path,
                )

    def _platform(self, config: Any) -> str:
        """GetPlatform()."""
        if config.model_type != 0:
            logs.warning(
                SRC,
                "Deprecated ModelServerConfig::model_type field used. Prefer "
                "ModelServerConfig::model_platform.",
            )
            if config.model_platform:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                    "ModelServerConfig::model_platform, model name is ",
                    config.name,
                )
            if config.model_type == 1:  # ModelType::TENSORFLOW
                return TENSORFLOW_PLATFORM
            raise error(
                Code.INVALID_ARGUMENT,
                "ModelServerConfig::model_type choice ",
                config.model_type,
                " not supported.",
            )
        if not config.model_platform:
            raise error(
                Code.INVALID_ARGUMENT,
                "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
                "ModelServerConfig::model_platform, model name is ",
                config.name,
            )
        return str(config.model_platform)

    def _validate_no_platform_changes(self, old_list: Any, new_list: Any) -> None:
        """ValidateNoModelsChangePlatforms()."""
        old = {c.name: self._platform(c) for c in old_list.config}
        for config in new_list.config:
            if config.name not in old:
                continue
            new_platform = self._platform(config)
            if new_platform != old[config.name]:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Illegal to change a model's platform. For model ",
                    config.name,
                    " platform was ",
                    old[config.name],
                    " and new platform requested is ",
                    new_platform,
                )

    # --- labels ------------------------------------------------------------------------------

    def _update_model_version_label_map(self) -> None:
        """ServerCore::UpdateModelVersionLabelMap()."""
        new_map: dict[str, dict[str, int]] = {}
        for config in self._config.model_config_list.config:
            states = dict(self.monitor.get_version_states(config.name))
            for label, version in config.version_labels.items():
                allow_any = False
                if self._allow_unavailable_labels:
                    try:
                        existing = self.version_for_label(config.name, label)
                        moved = existing != version
                    except StatusError:
                        moved = False
                    allow_any = not moved
                state = states.get(version)
                if not allow_any and (
                    state is None or state.manager_state != ManagerState.AVAILABLE
                ):
                    raise error(
                        Code.FAILED_PRECONDITION,
                        "Request to assign label to version ",
                        version,
                        " of model ",
                        config.name,
                        ", which is not currently available for inference",
                    )
                new_map.setdefault(config.name, {})[label] = version
        # options_.allow_version_labels is true in the model server.
        with self._labels_mu:
            self._labels = new_map

    def version_for_label(self, model: str, label: str) -> int:
        """ServerCore::GetModelVersionForLabel()."""
        with self._labels_mu:
            if self._labels is None:
                raise error(Code.UNAVAILABLE, "Model labels does not init yet.", label)
            version = self._labels.get(model, {}).get(label)
        if version is None:
            raise error(Code.INVALID_ARGUMENT, "Unrecognized servable version label: ", label)
        return version

    def labels(self) -> dict[str, dict[str, int]]:
        with self._labels_mu:
            return {m: dict(v) for m, v in (self._labels or {}).items()}

    # --- models ------------------------------------------------------------------------------

    def _servables_to_monitor(self) -> list[ServableToMonitor]:
        """CreateStoragePathSourceConfig()."""
        out = []
        for model in self._config.model_config_list.config:
            logs.info(SRC, f" (Re-)adding model: {model.name}")
            out.append(ServableToMonitor(model.name, model.base_path, model.model_version_policy))
        return out

    def _check_routes(self) -> None:
        """CreateStoragePathRoutes(): only the TensorFlow platform is configured."""
        for model in self._config.model_config_list.config:
            platform = self._platform(model)
            if platform != TENSORFLOW_PLATFORM:
                raise error(
                    Code.INVALID_ARGUMENT,
                    "Model ",
                    model.name,
                    " requests unsupported platform ",
                    platform,
                )

    def _on_aspired(self, name: str, versions: list[tuple[ServableId, str]]) -> None:
        """Source -> SavedModelBundleSourceAdapter -> AspiredVersionsManager."""
        aspired = [AspiredVersion(sid, self._loader_for(path)) for sid, path in versions]
        self.manager.set_aspired_versions(name, aspired)

    def _loader_for(self, path: str) -> Any:
        mounts, options = self._mounts, self._load_options

        def load(sid: ServableId) -> bundles.Bundle:
            return bundles.load(path, mounts.local(path), options)

        return load

    def _add_models_via_model_config_list(self) -> None:
        """ServerCore::AddModelsViaModelConfigList()."""
        servables = self._servables_to_monitor()
        self._check_routes()
        if self._source is None:
            source = FileSystemStoragePathSource(self._mounts, self._fs_poll_wait)
            source.update_config(servables)
            # ConnectSourcesWithFastInitialLoad(): many load threads while the first versions
            # load, then back to num_load_threads (which waits for the loads in flight).
            self.manager.set_num_load_threads(self._num_initial_load_threads)
            self._source = source
            source.set_aspired_versions_callback(self._on_aspired)
            try:
                requests = [ServableRequest(s.name, None) for s in servables]
                reached, states = self.monitor.wait_until_servables_reach_state(
                    requests, ManagerState.AVAILABLE
                )
                if not reached:
                    raise error(
                        Code.UNKNOWN,
                        self._unavailable_message(states, "servable(s)", self.monitor),
                    )
            finally:
                self.manager.set_num_load_threads(self._num_load_threads)
        else:
            fresh = ServableStateMonitor(self.bus)
            try:
                old_names = {s.name for s in self._source.servables}
                new_models = [s.name for s in servables if s.name not in old_names]
                self._source.update_config(servables)
                if new_models:
                    reached, states = fresh.wait_until_servables_reach_state(
                        [ServableRequest(n, None) for n in sorted(new_models)],
                        ManagerState.AVAILABLE,
                    )
                    if not reached:
                        raise error(
                            Code.UNKNOWN, self._unavailable_message(states, "model(s)", fresh)
                        )
            finally:
                fresh.close()

    @staticmethod
    def _unavailable_message(
        states: dict[ServableId, ManagerState], what: str, monitor: ServableStateMonitor
    ) -> str:
        """load_servables_fast.cc / WaitUntilModelsAvailable() error text."""
        bad = [(sid, s) for sid, s in sorted(states.items()) if s != ManagerState.AVAILABLE]
        message = f"{len(bad)} {what} did not become available: {{"
        for sid, _ in bad:
            state = monitor.get_state(sid)
            detail = (
                " due to error: " + state.health.to_string()
                if state is not None and not state.health.ok
                else ""
            )
            message += f"{{{sid.debug_string()}{detail}}}, "
        return message + "}"

    # --- requests ----------------------------------------------------------------------------

    def servable_request(self, model_spec: Any) -> ServableRequest:
        """ServerCore::ServableRequestFromModelSpec()."""
        if not model_spec.name:
            raise error(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
        choice = model_spec.WhichOneof("version_choice")
        if choice == "version":
            return ServableRequest(model_spec.name, model_spec.version.value)
        if choice == "version_label":
            version = self.version_for_label(model_spec.name, model_spec.version_label)
            return ServableRequest(model_spec.name, version)
        return ServableRequest(model_spec.name, None)

    def servable_handle(self, model_spec: Any) -> Handle:
        """ServerCore::GetServableHandle()."""
        return self.manager.get_handle(self.servable_request(model_spec))
