"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

from sft_core.config import build_config
from sft_core.plugins import PluginHost

SAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "sft_classification" / "sample_data"


def make_config(host: PluginHost, task: str = "classification", **values):
    """A resolved RunConfig from flat dotted keys, e.g. make_config(host, **{"trainer.lr": 1e-3})."""
    return build_config(host.get_task(task), [("test", values)])


def train_tiny(tmp_path: Path, model: str, extra_plugins=(), resume=False, **values) -> dict:
    from sft_core import runner

    host = PluginHost(extra_plugins=tuple(extra_plugins))
    defaults = {"model": model, "output_dir": str(tmp_path), "trainer.lr": 1e-3, "trainer.batch_size": 16,
                "trainer.eval_batch_size": 16}
    config = make_config(host, **{**defaults, **values})
    return runner.train(config, host, resume=resume)


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))
