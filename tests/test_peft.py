"""LoRA through peft (the ``peft:`` section), for any task: what trains, merged and adapter-only
saves, checkpoints of trainable state only, exact resume, DoRA, gradient checkpointing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sft_core.models import adapters
from sft_core import engine
from sft_core.errors import ConfigError, SFTError
from sft_core.host.manager import PluginHost
from sft_core.testing import tiny_bert, tiny_decoder

from helpers import SAMPLE, constructed_texts, train_tiny, write_name_ner
from test_engine import Recorder


@pytest.fixture(scope="module")
def backbones(tmp_path_factory, tiny_model) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lora-backbones")
    texts = [json.loads(line)["sentence"] for name in ("train.jsonl", "eval.jsonl")
             for line in (SAMPLE / name).read_text().splitlines()]
    return {"bert": tiny_model, "llama": tiny_decoder(root / "llama", texts + constructed_texts(), family="llama")}


LORA = {"peft.method": "lora", "peft.r": 4, "trainer.lr": 5e-3, "trainer.eval_every": 0}


def _weights(folder) -> dict[str, torch.Tensor]:
    return load_file(str(Path(folder) / "model.safetensors"))


def _batch(model_dir: str, n: int = 6):
    """A padded batch of sample sentences through a saved run's task, and that task."""
    from sft_core.engine.batching import build_features
    from sft_core.engine.evaluation import rows

    _, config, task = engine.load_saved(model_dir, PluginHost(), [])
    examples = task.load("eval", str(SAMPLE / "eval.jsonl"))[:n]
    tokenizer, _ = engine.load_model(task, model_dir)
    features = build_features(task, config, tokenizer, examples, "eval", use_cache=False)
    return task.collate(rows(features, list(range(n))))


@pytest.mark.parametrize("backbone", ["bert", "llama"])
def test_only_adapters_and_head_train(tmp_path, backbones, backbone):
    base_dir = backbones[backbone]
    result = train_tiny(tmp_path, base_dir, **{**LORA, "trainer.max_steps": 6})
    assert result["train"]["train_steps"] == 6
    base, merged = _weights(base_dir), _weights(tmp_path / "model")
    prefix = "bert." if backbone == "bert" else "model."
    targeted = {"bert": ("query", "key", "value", "dense"),
                "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}[backbone]
    changed, same = [], []
    for name, before in base.items():
        after = merged[prefix + name if not name.startswith(prefix) else name]
        (same if torch.equal(before, after) else changed).append(name)
    # the merged adapters change exactly the targeted weight matrices of the backbone, nothing else
    assert changed and all(n.endswith(".weight") and n.split(".")[-2] in targeted for n in changed), changed
    assert all(not (n.endswith(".weight") and n.split(".")[-2] in targeted) for n in same), same
    head = [n for n in merged if not n.startswith(prefix)]
    assert head, "the head is saved"
    # and what trains is counted: adapters plus the head
    info = json.loads((tmp_path / "run_info.json").read_text())["parameters"]
    assert info["trainable"] + info["frozen"] == info["total"] and 0 < info["trainable"] < info["frozen"]
    head_params = sum(merged[n].numel() for n in head)
    backbone_params = sum(t.numel() for n, t in merged.items() if n.startswith(prefix))
    # frozen: the whole backbone, and the head's original copy (peft trains a copy of it)
    assert info["frozen"] == backbone_params + head_params
    assert info["trainable"] > head_params  # the adapters train too


@pytest.mark.parametrize("backbone", ["bert", "llama"])
def test_merged_save_equals_the_adapter_model_and_loads_without_peft(tmp_path, backbones, backbone):
    train_tiny(tmp_path, backbones[backbone], **{**LORA, "trainer.max_steps": 6, "trainer.save_every": 6})
    checkpoint = tmp_path / "checkpoints" / "step-00000006" / "model"
    assert adapters.is_adapter_folder(checkpoint) and not (checkpoint / "model.safetensors").exists()
    merged_dir = tmp_path / "model"
    assert not adapters.is_adapter_folder(merged_dir)
    assert "peft" not in json.loads((merged_dir / "config.json").read_text()).get("architectures", [""])[0].lower()

    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()  # plain transformers, no peft
    _, _, task = engine.load_saved(str(checkpoint), PluginHost(), [])
    _, adapted = engine.load_model(task, str(checkpoint))
    assert adapters.is_peft_model(adapted)
    adapted.eval()
    batch = {k: v for k, v in _batch(str(merged_dir)).items() if k != "labels"}
    with torch.no_grad():
        difference = (plain(**batch).logits - adapted(**batch).logits).abs().max().item()
    assert difference <= 1e-4


def test_a_merge_that_changes_outputs_is_not_saved(tmp_path, backbones, monkeypatch):
    monkeypatch.setattr(adapters, "MERGE_TOLERANCE", -1.0)  # any difference, even none, now counts as wrong
    with pytest.raises(SFTError, match="merging the adapters changed the model's outputs"):
        train_tiny(tmp_path, backbones["bert"], **{**LORA, "trainer.max_steps": 2})
    assert not (tmp_path / "model").exists()
    assert not list(tmp_path.glob(".tmp-*")), "a half-written model folder was left behind"


def test_adapter_only_save_reloads_for_eval_and_predict(tmp_path, backbones):
    result = train_tiny(tmp_path, backbones["llama"], **{**LORA, "trainer.max_steps": 6, "peft.save": "adapter"})
    folder = tmp_path / "model"
    assert adapters.is_adapter_folder(folder) and not (folder / "model.safetensors").exists()
    info = json.loads((folder / "sft_task.json").read_text())
    assert info["adapter"]["base_model"] == backbones["llama"]
    saved = load_file(str(folder / adapters.ADAPTER_WEIGHTS))
    assert saved and all("lora_" in k or "modules_to_save" in k or ".score." in k for k in saved), sorted(saved)[:5]

    again = engine.evaluate_saved(str(folder), str(SAMPLE / "eval.jsonl"), str(tmp_path / "again"), PluginHost())
    assert again["metrics"]["accuracy"] == pytest.approx(result["eval"]["accuracy"])
    assert (tmp_path / "again" / "predictions.jsonl").read_text() == (tmp_path / "predictions.jsonl").read_text()
    predicted = list(engine.predict_saved(str(folder), ["a gripping, funny film"], None, PluginHost()))
    assert predicted[0]["prediction"] in ("positive", "negative")


@pytest.mark.parametrize("backbone", ["bert", "llama"])
def test_lora_resume_continues_exactly(tmp_path, backbones, backbone):
    values = {**LORA, "data.train": str(SAMPLE / "train.jsonl"), "data.max_train_samples": 40, "trainer.batch_size": 8,
              "trainer.max_steps": 8, "trainer.save_every": 3, "trainer.keep_checkpoints": 5, "peft.dropout": 0.1}
    train_tiny(tmp_path / "straight", backbones[backbone], **values)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_tiny(interrupted, backbones[backbone], [Recorder(fail_at_step=5, exc=KeyboardInterrupt)], **values)

    checkpoint = interrupted / "checkpoints" / "step-00000003"
    # the checkpoint holds the trainable parameters only, and optimizer state for just those
    weights = load_file(str(checkpoint / "model" / adapters.ADAPTER_WEIGHTS))
    state = torch.load(checkpoint / "training_state.pt", weights_only=False)["optimizer"]["state"]
    assert len(state) == len(weights)
    assert sum(s["exp_avg"].numel() for s in state.values()) == sum(w.numel() for w in weights.values())

    recorder = Recorder()
    train_tiny(interrupted, backbones[backbone], [recorder], resume=True, **values)
    assert recorder.calls[:2] == ["train_start:3", "step_end:4"]
    straight, resumed = _weights(tmp_path / "straight" / "model"), _weights(interrupted / "model")
    assert straight.keys() == resumed.keys()
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


def test_dora_trains_and_merges(tmp_path, backbones):
    train_tiny(tmp_path, backbones["llama"], **{**LORA, "trainer.max_steps": 3, "peft.dora": True,
                                                "trainer.save_every": 3})
    config = json.loads((tmp_path / "checkpoints" / "step-00000003" / "model" / adapters.ADAPTER_CONFIG).read_text())
    assert config["use_dora"] is True
    assert (tmp_path / "model" / "model.safetensors").is_file()  # merged, and checked on a batch


def test_ner_with_lora_reads_only_the_scored_tokens(tmp_path):
    train, evaluation = write_name_ner(tmp_path / "data")
    bert = tiny_bert(tmp_path / "bert", constructed_texts())
    result = train_tiny(tmp_path / "run", bert, task="ner", **{**LORA, "trainer.max_steps": 4, "data.train": str(train),
                                                               "data.eval": str(evaluation)})
    assert result["eval"]["eval_samples"] == 40
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_targets_default_per_family_and_unknown_names_are_errors(backbones):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(backbones["llama"], num_labels=2)
    names = adapters.target_modules(model, None)
    assert {n.rsplit(".", 1)[-1] for n in names} == set(adapters.FAMILY_TARGETS["llama"])
    assert all(n.startswith("model.") for n in names)  # never the head
    assert adapters.head_modules(model) == ["score"]
    assert adapters.target_modules(model, ["q_proj"]) == [n for n in names if n.endswith("q_proj")]
    with pytest.raises(ConfigError, match="no linear layer of the backbone has such a name.*q_proj"):
        adapters.target_modules(model, ["query"])


def test_qlora_needs_a_gpu(tmp_path, backbones, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without one, whatever this one has
    with pytest.raises(ConfigError, match="peft.method=qlora .* needs a CUDA GPU"):
        train_tiny(tmp_path, backbones["llama"], **{**LORA, "peft.method": "qlora", "trainer.max_steps": 1})


def test_adapter_save_of_a_model_built_at_random_is_refused(tmp_path):
    # the translation task's model "scratch" is a transformer built from its config at random
    small = {"translation.encoder_layers": 1, "translation.decoder_layers": 1, "translation.d_model": 32,
             "translation.ffn_dim": 64, "translation.attention_heads": 2, "translation.vocab_size": 300}
    with pytest.raises(SFTError, match="cannot be loaded again"):
        train_tiny(tmp_path, "scratch", task="translation", **{**LORA, **small, "peft.save": "adapter",
                                                               "trainer.max_steps": 1})


@pytest.mark.parametrize("backbone", ["bert", "llama"])
@pytest.mark.parametrize("lora", [False, True])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(backbones, backbone, lora):
    from transformers import AutoModelForSequenceClassification

    from sft_core.models.backbone import enable_gradient_checkpointing
    from sft_core.config import PeftConfig

    def loss_and_grads(checkpointing: bool):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(backbones[backbone], num_labels=2)
        model.config.pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else \
            model.config.eos_token_id
        if checkpointing:
            enable_gradient_checkpointing(model, "tiny")
        if lora:
            model = adapters.apply(model, PeftConfig(method="lora", r=4), "tiny")
        model.train()  # with dropout: the recomputation must draw the same masks
        layers = [m for m in model.modules() if type(m).__name__ in ("BertLayer", "LlamaDecoderLayer")]
        calls = []
        # what a checkpointed layer recomputes runs twice (its own forward hook fires once either way)
        next(layers[-1].children()).register_forward_hook(lambda *args: calls.append(1))
        torch.manual_seed(1)
        ids = torch.randint(5, 100, (4, 12))
        loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1, 1, 0])).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, len(calls)

    loss, grads, forwards = loss_and_grads(False)
    loss_gc, grads_gc, forwards_gc = loss_and_grads(True)
    assert (forwards, forwards_gc) == (1, 2), "the checkpointed layer runs again in the backward pass"
    assert torch.allclose(loss, loss_gc, atol=1e-6)
    assert grads.keys() == grads_gc.keys() and grads
    for name in grads:
        assert torch.allclose(grads[name], grads_gc[name], atol=1e-5, rtol=1e-4), name


def test_gradient_checkpointing_in_a_run(tmp_path, backbones):
    values = {"trainer.max_steps": 4, "trainer.eval_every": 0, "trainer.save_every": 0}
    train_tiny(tmp_path / "plain", backbones["llama"], **values)
    train_tiny(tmp_path / "gc", backbones["llama"], **values, **{"trainer.gradient_checkpointing": True})
    plain, checkpointed = _weights(tmp_path / "plain" / "model"), _weights(tmp_path / "gc" / "model")
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_the_best_adapters_are_the_ones_merged(tmp_path, backbones):
    # eval_samples never improves on the first evaluation: step 2 stays the best of 2, 4 and 6
    result = train_tiny(tmp_path, backbones["llama"], **{**LORA, "trainer.max_steps": 6, "trainer.eval_every": 2,
                                                         "trainer.save_every": 0, "trainer.metric_for_best": "eval_samples"})
    assert result["best_step"] == 2
    best = tmp_path / "checkpoints" / "best"
    assert adapters.is_adapter_folder(best)

    from transformers import AutoModelForSequenceClassification

    merged = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    _, _, task = engine.load_saved(str(best), PluginHost(), [])
    _, adapted = engine.load_model(task, str(best))
    adapted.eval()
    batch = {k: v for k, v in _batch(str(tmp_path / "model")).items() if k != "labels"}
    with torch.no_grad():
        assert (merged(**batch).logits - adapted(**batch).logits).abs().max().item() <= 1e-4
