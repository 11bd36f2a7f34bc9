"""The plugin manager: loads the ``sft`` entry-point group and collects the registered tasks.

Built-in tasks arrive through the same entry points as third-party ones. A plugin that fails to
import, targets an incompatible plugin contract, implements an unknown hook or raises while
registering is recorded and switched off (``sft plugins`` shows it, other commands warn) and every
other plugin keeps working; two plugins registering one task name is an error naming both.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata as metadata
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pluggy

from ..version import __version__
from . import hookspecs
from ..config import DataConfig
from ..errors import SFTError
from .. import compat

ENTRY_POINT_GROUP = "sft"
#: The core's own command plugins (``sft serve``, ``sft export``, ...): entry points of the sft-core
#: distribution, loaded always, whatever SFT_LOAD_PLUGINS / SFT_DISABLE_PLUGINS say, and registered
#: as a third-party command would be (``sft_register_commands``).
CORE_GROUP = "sft.core"
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
    """One plugin as ``sft plugins`` shows it; ``error`` is set when it was switched off."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    contract: str | None = None  # the SFT_CONTRACT it declares, if any


class DuplicateTaskError(SFTError):
    """Two plugins register one task name: fatal, since either choice would be a silent guess."""


def _reason(exc: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def contract_problem(declared: object) -> str | None:
    """Why a plugin declaring ``SFT_CONTRACT = declared`` cannot load here, or None when it can."""
    return compat.contract_problem(declared, __version__)


def _env_names(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {n.strip() for n in value.split(",") if n.strip()}


def normalize_distribution(name: str) -> str:
    """A distribution name as pip compares them (PEP 503): ``SFT_Multiple.Choice`` -> ``sft-multiple-choice``."""
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _named(names: set[str], entry_point: str, distribution: str | None) -> str | None:
    """Which of ``names`` (entry-point or distribution names, from an environment variable) means
    this plugin, or None."""
    if entry_point in names:
        return entry_point
    if distribution is not None:
        wanted = normalize_distribution(distribution)
        return next((n for n in names if normalize_distribution(n) == wanted), None)
    return None


class PluginHost:
    """A plugin manager with its loaded plugins and registered tasks."""

    def __init__(self, extra_plugins: tuple = ()):
        self.pm = pluggy.PluginManager(PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.tasks: dict[str, TaskSpec] = {}
        self.warnings: list[str] = []  # printed by the CLI, e.g. an unknown name in SFT_LOAD_PLUGINS
        self._load_entry_points()
        for ep in sorted(metadata.entry_points(group=CORE_GROUP), key=lambda e: e.name):
            self.pm.register(ep.load(), name=ep.value)
        for plugin in extra_plugins:
            info = PluginInfo(name=self.pm.get_canonical_name(plugin), module=getattr(plugin, "__name__", type(plugin).__name__))
            self.plugins.append(info)
            self._add(info, plugin)
        self._add_hookspecs()
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
        """Load the entry points of group ``sft``; SFT_LOAD_PLUGINS / SFT_DISABLE_PLUGINS name plugins by
        entry-point name or by distribution name (what ``pip list`` and ``sft plugins`` show)."""
        only = _env_names("SFT_LOAD_PLUGINS")
        disabled = _env_names("SFT_DISABLE_PLUGINS") or set()
        seen: set[str] = set()
        used: set[str] = set()
        known: set[str] = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            dist_name = dist.name if dist else None
            known.update(n for n in (ep.name, dist_name) if n)
            skip = _named(disabled, ep.name, dist_name)
            keep = _named(only, ep.name, dist_name) if only is not None else None
            used.update(n for n in (skip, keep) if n)
            if ep.name in seen or skip or (only is not None and not keep):
                continue
            seen.add(ep.name)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist_name,
                version=dist.version if dist else None,
            )
            self.plugins.append(info)
            try:
                module = ep.load()
            except (Exception, SystemExit) as exc:  # a broken plugin must not take the others down
                info.error = _reason(exc)
                continue
            self._add(info, module)
        for var, names in (("SFT_LOAD_PLUGINS", only or set()), ("SFT_DISABLE_PLUGINS", disabled)):
            for name in sorted(names - used):
                self.warnings.append(f"{var} names {name!r}, which is no installed plugin (entry points and "
                                     f"distributions: {', '.join(sorted(known)) or 'none'})")

    def _add(self, info: PluginInfo, plugin: object) -> None:
        """Register ``plugin`` with pluggy unless it targets a plugin contract this sft lacks."""
        declared = getattr(plugin, "SFT_CONTRACT", None)
        if declared is not None:
            info.contract = str(declared)
            problem = contract_problem(declared)
            if problem:
                info.error = problem
                return
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:  # e.g. a hook implementation with the wrong arguments
            info.error = _reason(exc)

    def _fail(self, info: PluginInfo, reason: str) -> None:
        """Switch a plugin off: record why, withdraw its tasks, and call none of its hooks again."""
        info.error = reason
        for name in [n for n, spec in self.tasks.items() if spec.provider == info.name]:
            del self.tasks[name]
        plugin = self.pm.get_plugin(info.name)
        if plugin is not None:
            self.pm.unregister(plugin)

    def _add_hookspecs(self) -> None:
        """Let plugins open extension points of their own (``sft_add_hookspecs``) before hook names
        are checked; one that raises is switched off."""
        for impl in self.pm.hook.sft_add_hookspecs.get_hookimpls():
            try:
                impl.function(add=self.pm.add_hookspecs)
            except (Exception, SystemExit) as exc:
                self._fail(self._info(impl.plugin_name), f"adding hook specifications failed: {_reason(exc)}")

    def _check_hook_names(self) -> None:
        """Unregister (and report) plugins implementing a hook that does not exist, e.g. a typo."""
        while True:
            try:
                self.pm.check_pending()
                return
            except pluggy.PluginValidationError as exc:
                self._fail(self._info(self.pm.get_name(exc.plugin)), f"unknown hook: {exc}")

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

            def register(name, factory, *, config=None, data_config=None, summary="", defaults=None) -> None:
                if name in self.tasks:
                    other = self.tasks[name]
                    raise DuplicateTaskError(
                        f"task {name!r} is registered twice: by plugin {other.provider!r}"
                        f" ({other.distribution or 'no distribution'}) and by plugin {info.name!r}"
                        f" ({info.distribution or 'no distribution'}); uninstall one or disable it"
                        " with SFT_DISABLE_PLUGINS"
                    )
                if not isinstance(name, str) or not name or not callable(factory):
                    raise TypeError(f"register(name, factory) needs a task name and a callable, got {name!r}, {factory!r}")
                for cls, what in ((config, "config"), (data_config, "data_config")):
                    if cls is not None and not dataclasses.is_dataclass(cls):
                        raise TypeError(f"{what} of task {name!r} must be a dataclass, got {cls!r}")
                if data_config is not None and not issubclass(data_config, DataConfig):
                    raise TypeError(f"data_config of task {name!r} must subclass sft_core.DataConfig, got {data_config!r}")
                self.tasks[name] = TaskSpec(
                    name=name, factory=factory, summary=summary, config=config,
                    data_config=data_config, defaults=dict(defaults or {}),
                    provider=info.name, distribution=info.distribution,
                )

            try:
                impl.function(register=register)
            except DuplicateTaskError:
                raise
            except (Exception, SystemExit) as exc:
                self._fail(info, f"registration failed: {_reason(exc)}")

    def register_commands(self, cli) -> None:
        """Let plugins add subcommands; one that raises is switched off and its commands removed."""
        for impl in reversed(self.pm.hook.sft_register_commands.get_hookimpls()):
            before = set(cli.commands)
            try:
                impl.function(cli=cli)
            except (Exception, SystemExit) as exc:
                for name in set(cli.commands) - before:
                    del cli.commands[name]
                self._fail(self._info(impl.plugin_name), f"command registration failed: {_reason(exc)}")

    def get_task(self, name: str) -> TaskSpec:
        if name not in self.tasks:
            known = ", ".join(sorted(self.tasks)) or "none (no task plugin is loaded)"
            raise SFTError(f"unknown task {name!r}; known tasks: {known}")
        return self.tasks[name]
