"""Plugins written for an older contract, and code importing a module that moved: the one place
that keeps them working.

- **Contract versions**: a plugin declaring ``SFT_CONTRACT = "1.0"`` or ``"1.1"`` loads under
  contract 2.0 (``contract_problem``). What changed for it is adapted here: 1.1 tasks offer their
  data as instructions through four members on the task (``instruction_prompt``,
  ``instruction_fields``, ``instruction_answer``, ``instruction_prediction``), which
  ``legacy_instruction_adapter`` turns into the adapter 2.0 plugins register; a 1.0 task without
  ``metric_directions`` keeps the 1.0 rule ("loss" in a name is lower-is-better, ``task.roles``).
- **Moved modules**: modules the 1.x contract named public moved into the layer packages;
  ``install_module_aliases`` lets ``import sft_core.backbone`` (and the like) find them.

Imports no torch.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from .task import CONTRACT_VERSION

#: Older contract majors this sft still loads through this module: major -> its last minor version.
LEGACY_CONTRACTS = {1: 1}

#: Public modules of contract 1.x that moved: old name -> new name.
MOVED_MODULES = {
    "sft_core.backbone": "sft_core.models.backbone",
    "sft_core.last_layer": "sft_core.models.last_layer",
}

#: The members a 1.1 task offers its data as instructions with.
LEGACY_INSTRUCTION_MEMBERS = ("instruction_fields", "instruction_answer", "instruction_prediction")


def parse_version(value: object) -> tuple[int, int] | None:
    """``"1.1"`` -> (1, 1), ``2`` -> (2, 0); None for anything that is no version."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, 0
    if isinstance(value, str):
        major, _, minor = value.strip().partition(".")
        if major.isdigit() and (minor.isdigit() or not minor):
            return int(major), int(minor or 0)
    return None


def contract_problem(declared: object, sft_version: str) -> str | None:
    """Why a plugin declaring ``SFT_CONTRACT = declared`` cannot load here, or None when it can."""
    wanted, provided = parse_version(declared), parse_version(CONTRACT_VERSION)
    if wanted is None:
        return f'SFT_CONTRACT = {declared!r} is not a contract version (expected "MAJOR.MINOR", e.g. "{CONTRACT_VERSION}")'
    last_minor = LEGACY_CONTRACTS.get(wanted[0], provided[1] if wanted[0] == provided[0] else None)
    if last_minor is not None and wanted[1] <= last_minor:
        return None
    newer = wanted > provided or (wanted[0] in LEGACY_CONTRACTS and wanted[1] > last_minor)
    return (f"targets plugin contract {wanted[0]}.{wanted[1]}, but sft-core {sft_version} provides contract "
            f"{CONTRACT_VERSION}; install a release of the plugin made for contract {provided[0]}.x"
            f"{' or a newer sft-core' if newer else ''}")


class LegacyInstructionAdapter:
    """A 1.1 task's four instruction members as a 2.0 instruction adapter."""

    def __init__(self, task: Any):
        self.task = task
        self.prompt = getattr(task, "instruction_prompt", None)

    def fields(self, example: dict) -> dict[str, str]:
        return self.task.instruction_fields(example)

    def answer(self, example: dict) -> str:
        return self.task.instruction_answer(example)

    def prediction(self, text: str, example: dict) -> Any:
        return self.task.instruction_prediction(text, example)


def legacy_instruction_adapter(task: Any) -> LegacyInstructionAdapter | None:
    """The adapter of a task written for contract 1.1 that offers its data as instructions, else None."""
    if all(callable(getattr(task, name, None)) for name in LEGACY_INSTRUCTION_MEMBERS):
        return LegacyInstructionAdapter(task)
    return None


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds a moved module under its old name: the module object is the new one's."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module(MOVED_MODULES[spec.name])

    def exec_module(self, module):
        pass  # already executed under its new name


def install_module_aliases() -> None:
    """Let the old names of moved public modules import (once per process)."""
    if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedModuleFinder())
