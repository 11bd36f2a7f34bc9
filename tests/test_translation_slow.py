"""Integration: translation models trained from scratch learn (marked slow: `make test-slow`)."""

from __future__ import annotations

import json

import pytest

from conftest import SHARED_DATA

pytestmark = pytest.mark.slow


def _train(tmp_path, **values) -> dict:
    from sft_core import engine
    from sft_core.config import build_config
    from sft_core.host.manager import PluginHost

    host = PluginHost()
    config = build_config(host.get_task("translation"), [("test", {"output_dir": str(tmp_path), **values})])
    return engine.train(config, host)["eval"]


def test_the_default_run_learns_the_builtin_sample(tmp_path):
    """`sft run --task translation` with no other argument: about 2 minutes on 2 cores."""
    metrics = _train(tmp_path, **{"trainer.save_every": 0})
    assert metrics["bleu"] >= 90
    assert 0.9 <= metrics["len_ratio"] <= 1.1


@pytest.mark.skipif(not (SHARED_DATA / "multi30k" / "train.en.gz").is_file(), reason="../shared/data absent")
def test_multi30k_learns_in_five_minutes(tmp_path):
    """The Multi30k recipe cut to 5 minutes of training, scored on 300 validation pairs."""
    data = SHARED_DATA / "multi30k"
    metrics = _train(tmp_path, **{"data.train": str(data / "train.en.gz"), "data.eval": str(data / "val.en.gz"),
                                  "data.max_eval_samples": 300, "trainer.batch_size": 64, "trainer.lr": 1e-3,
                                  "trainer.epochs": 7, "trainer.max_time_minutes": 5, "trainer.eval_every": 0,
                                  "trainer.save_every": 0})
    assert metrics["bleu"] >= 10
    result = json.loads((tmp_path / "train_results.json").read_text())
    assert result["status"] == "stopped" and result["train_runtime"] <= 5 * 60 + 30
