"""The last encoder layer computed only where a head reads (sft_core.models.last_layer), as used by the NER
task: the same logits there, the same loss and gradients, the same trained weights and predictions."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from sft_core.models import last_layer

from helpers import load_weights, train_tiny

IGNORE = -100


def _token_pair(impl: str):
    import transformers

    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=5, attn_implementation=impl)
    torch.manual_seed(0)
    full = transformers.BertForTokenClassification(config)
    fast = copy.deepcopy(full)
    assert last_layer.install(fast)
    for model in (full, fast):  # dropout off: both must compute the same function
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return full, fast


def _batch():
    ids = torch.randint(5, 100, (4, 12))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    mask[3, 3:] = 0
    labels = torch.full_like(ids, IGNORE)
    labels[0, [1, 2, 5, 9, 10]] = torch.tensor([0, 1, 2, 3, 4])  # rows with different numbers of labels
    labels[1, [1, 4]] = torch.tensor([2, 2])
    labels[2, 1:11] = torch.arange(10) % 5
    labels[3, 1] = 4
    return ids, mask, labels


def test_positions_of_lists_each_rows_true_positions_in_order_then_fillers():
    mask = torch.tensor([[0, 1, 1, 0, 1], [0, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    positions = last_layer.positions_of(mask)
    assert positions.shape == (3, 3)
    assert positions[0].tolist() == [1, 2, 4]
    assert positions[1, 0] == 2 and not mask[1, positions[1, 1:]].any()  # fillers are unselected positions
    assert all(len(set(row.tolist())) == 3 for row in positions)  # no position twice in a row


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_token_classifier_same_logits_loss_and_gradients(impl):
    full, fast = _token_pair(impl)
    ids, mask, labels = _batch()
    out_full = full(input_ids=ids, attention_mask=mask, labels=labels)
    out_full.loss.backward()

    positions = last_layer.positions_of(labels != IGNORE)
    with last_layer.reading(fast, positions):
        logits = fast(input_ids=ids, attention_mask=mask).logits
    assert logits.shape == (4, 10, 5)
    picked = labels.gather(1, positions)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), picked.flatten(), ignore_index=IGNORE)
    loss.backward()

    read = labels != IGNORE
    expected = out_full.logits.gather(1, positions.unsqueeze(-1).expand(-1, -1, 5))
    keep = picked != IGNORE
    assert int(keep.sum()) == int(read.sum())
    torch.testing.assert_close(logits[keep], expected[keep], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loss, out_full.loss)
    for (name, p), q in zip(full.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_the_last_layer_computes_only_the_positions_read():
    _, fast = _token_pair("sdpa")
    shapes = []
    fast.bert.encoder.layer[-1].intermediate.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    fast.bert.encoder.layer[0].intermediate.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    ids = torch.randint(5, 100, (3, 9))
    with last_layer.reading(fast, torch.tensor([[1, 2], [4, 5], [3, 0]])):
        assert fast(input_ids=ids).logits.shape == (3, 2, 5)
    assert shapes == [(3, 9, 32), (3, 2, 32)]
    shapes.clear()
    assert fast(input_ids=ids).logits.shape == (3, 9, 5)  # outside reading(): every position
    assert shapes == [(3, 9, 32), (3, 9, 32)]


def test_models_without_a_bert_style_layer_are_left_alone():
    import transformers

    config = transformers.DistilBertConfig(vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
    model = transformers.DistilBertForTokenClassification(config)
    assert not last_layer.install(model)
    with pytest.raises(RuntimeError, match="install"):
        with last_layer.reading(model, torch.zeros(1, 1, dtype=torch.long)):
            pass


def _no_dropout(tiny_model, folder):
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_ner_training_and_predictions_are_the_same_with_and_without_it(tmp_path, tiny_model, label_all_tokens):
    model = _no_dropout(tiny_model, tmp_path / "no-dropout")
    # max_length 16 makes windows over the longer sentences; eval at the end reads every word
    common = {"trainer.max_steps": 4, "trainer.eval_every": 0, "trainer.save_every": 0, "trainer.max_length": 16,
              "trainer.lr": 5e-3, "ner.label_all_tokens": label_all_tokens}
    fast = train_tiny(tmp_path / "fast", model, task="ner", **common)
    full = train_tiny(tmp_path / "full", model, task="ner", **common, **{"ner.scored_tokens_last_layer": False})
    a, b = load_weights(tmp_path / "fast" / "model"), load_weights(tmp_path / "full" / "model")
    assert sorted(a) == sorted(b)
    for name in b:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)
    assert fast["eval"]["f1"] == full["eval"]["f1"]
    read = [json.loads(line) for line in (tmp_path / "fast" / "predictions.jsonl").read_text().splitlines()]
    assert read == [json.loads(line) for line in (tmp_path / "full" / "predictions.jsonl").read_text().splitlines()]


def test_the_ner_task_uses_it_unless_turned_off(tiny_model):
    from sft_core.host.manager import PluginHost

    from helpers import make_config

    host = PluginHost()
    for wanted in (True, False):
        task = host.get_task("ner").factory(make_config(host, "ner", **{"ner.scored_tokens_last_layer": wanted}))
        task.labels = ["O", "B-PER", "I-PER"]
        model = task.build_model(tiny_model)
        assert task.partial_last_layer is wanted
        assert hasattr(model.bert.encoder.layer[-1], "_sft_full_forward") is wanted
