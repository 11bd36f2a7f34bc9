"""The plugin manager: loads the ``sft`` entry-point group and collects the registered tasks.

Built-in tasks arrive through the same entry points as third-party ones. A plugin that fails to
import or to register is recorded (``sft plugins`` shows it, other commands warn) and every other
plugin keeps working; two plugins registering one task name is an error naming both.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from . import hookspecs
from .errors import SFTError

ENTRY_POINT_GROUP = "sft"
PROJECT_NAME = "sft"


@dataclass(frozen=True)
class TaskSpec:
    """One registered task: how to build it and which config it adds."""

    name: str
    factory: Callable[[Any], Any]
    summary: str = ""
    config: type | None = None
    data_config: type | None = None
    defaults: dict = field(default_factory=dict)
    provider: str = ""
    distribution: str | None = None

    @property
    def section(self) -> str:
        """Config section holding the task's own options, e.g. ``ner.constrained_decoding``."""
        return self.name.replace("-", "_")


@dataclass
class PluginInfo:
    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


def _env_names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


class PluginHost:
    """A plugin manager with its loaded plugins and registered tasks."""

    def __init__(self, extra_plugins: tuple = ()):
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.tasks: dict[str, TaskSpec] = {}
        self._load_entry_points()
        for plugin in extra_plugins:
            self.pm.register(plugin)
            self.plugins.append(PluginInfo(name=self.pm.get_name(plugin), module=getattr(plugin, "__name__", type(plugin).__name__)))
        self._check_hook_names()
        self._collect_tasks()
        for info in self.plugins:
            plugin = self.pm.get_plugin(info.name)
            if plugin is not None:
                info.hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])

    @property
    def hook(self):
        return self.pm.hook

    @property
    def failed(self) -> list[PluginInfo]:
        return [p for p in self.plugins if p.error]

    def _load_entry_points(self) -> None:
        only = _env_names("SFT_LOAD_PLUGINS")
        disabled = _env_names("SFT_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if ep.name in seen or ep.name in disabled or (only is not None and ep.name not in only):
                continue
            seen.add(ep.name)
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.name if dist else None,
                version=dist.version if dist else None,
            )
            self.plugins.append(info)
            try:
                module = ep.load()
                self.pm.register(module, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the others down
                info.error = f"{type(exc).__name__}: {exc}"

    def _check_hook_names(self) -> None:
        """Unregister (and report) plugins implementing a hook that does not exist, e.g. a typo."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                name = self.pm.get_name(exc.plugin)
                self.pm.unregister(exc.plugin)
                self._info(name).error = f"unknown hook: {exc}"

    def _info(self, name: str) -> PluginInfo:
        for info in self.plugins:
            if info.name == name:
                return info
        info = PluginInfo(name=name, module=name)
        self.plugins.append(info)
        return info

    def _collect_tasks(self) -> None:
        for impl in reversed(self.pm.hook.sft_register_tasks.get_hookimpls()):
            info = self._info(impl.plugin_name)
            added: list[str] = []

            def register(name, factory, *, config=None, data_config=None, summary="", defaults=None):
                if name in self.tasks:
                    other = self.tasks[name]
                    raise SFTError(
                        f"task {name!r} is registered twice: by plugin {other.provider!r}"
                        f" ({other.distribution or 'no distribution'}) and by plugin {info.name!r}"
                        f" ({info.distribution or 'no distribution'}); uninstall one or disable it"
                        " with SFT_DISABLE_PLUGINS"
                    )
                for cls, what in ((config, "config"), (data_config, "data_config")):
                    if cls is not None and not dataclasses.is_dataclass(cls):
                        raise TypeError(f"{what} of task {name!r} must be a dataclass, got {cls!r}")
                self.tasks[name] = TaskSpec(
                    name=name, factory=factory, summary=summary, config=config,
                    data_config=data_config, defaults=dict(defaults or {}),
                    provider=info.name, distribution=info.distribution,
                )
                added.append(name)

            try:
                impl.function(register=register)
            except SFTError:
                raise
            except Exception as exc:
                for name in added:
                    self.tasks.pop(name, None)
                info.error = f"registration failed: {type(exc).__name__}: {exc}"

    def get_task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none (no task plugin is loaded)"
            raise SFTError(f"unknown task {name!r}; known tasks: {known}")
        return self.tasks[name]
