"""The plugin host: loads the ``sft`` entry points, checks their contract, collects the registered
tasks and calls hooks (``manager``); the hook specifications (``hookspecs``)."""

from .manager import PluginHost, TaskSpec

__all__ = ["PluginHost", "TaskSpec"]
