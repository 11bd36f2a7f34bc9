"""The complete minimal task of the plugin guide (docs/plugins/writing.md) runs as written: extracted
from the page, registered, trained, evaluated and predicted with (so the documentation cannot go stale)."""

from __future__ import annotations

import re
import sys
import types

import pytest

from conftest import ROOT
from sft_core import engine
from sft_core.host.manager import PluginHost
from sft_core.engine.predictor import Predictor
from sft_core.testing import make_config, tiny_bert


def documented_task() -> types.ModuleType:
    text = (ROOT / "docs" / "plugins" / "writing.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (code,) = [b for b in blocks if b.startswith('"""A minimal sft task')]
    module = types.ModuleType("sft_topic_doc")
    sys.modules[module.__name__] = module
    exec(compile(code, "docs/plugins/writing.md (minimal task)", "exec"), module.__dict__)
    return module


@pytest.fixture(scope="module")
def topic_host():
    """A host with the built-in tasks and the documented ``topic`` task."""
    return PluginHost(extra_plugins=(documented_task(),))


def test_the_documented_task_trains_evaluates_and_predicts(topic_host, tmp_path):
    assert "topic" in topic_host.tasks and not topic_host.failed
    texts = [e["text"] for e in sys.modules["sft_topic_doc"].SAMPLE]
    model = tiny_bert(tmp_path / "tiny", texts * 10)  # a tokenizer that knows the sample's words
    config = make_config("topic", {"model": model, "output_dir": str(tmp_path / "run"), "trainer.epochs": 30,
                                   "trainer.lr": 3e-3, "trainer.batch_size": 8, "trainer.save_every": 0},
                         host=topic_host)
    result = engine.train(config, topic_host)
    assert result["eval"]["accuracy"] == 1.0  # the sample is learnable: each word names its topic
    again = engine.evaluate_saved(str(tmp_path / "run" / "model"), None, str(tmp_path / "eval"), topic_host)["metrics"]
    assert again["accuracy"] == result["eval"]["accuracy"]
    records = Predictor(str(tmp_path / "run" / "model"), topic_host).predict(["goal today", "bread again"])
    assert records == [{"text": "goal today", "topic": "sport"}, {"text": "bread again", "topic": "food"}]


def test_make_config_builds_what_sft_run_builds(topic_host):
    config = make_config("topic", {"trainer.max_length": 64}, host=topic_host)
    assert config.task == "topic" and config.trainer.max_length == 64 and config.data.train is None
