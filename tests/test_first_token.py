"""The classification fast path: the last layer computed for the first token only gives the same
logits, loss and gradients as the full layer, and leaves the saved model untouched."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch

from helpers import load_weights, train_tiny


def _pair(impl: str, cls_name: str = "BertForSequenceClassification"):
    import transformers
    from sft_classification.first_token import first_token_last_layer

    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=3, attn_implementation=impl)
    torch.manual_seed(0)
    full = getattr(transformers, cls_name)(config)
    fast = copy.deepcopy(full)
    return full, fast, first_token_last_layer(fast)


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_same_logits_loss_and_gradients_with_padding(impl):
    full, fast, applied = _pair(impl)
    assert applied
    ids = torch.randint(5, 100, (4, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    mask[3, 2:] = 0
    labels = torch.tensor([0, 1, 2, 1])
    outputs = []
    for model in (full, fast):
        model.train()
        for module in model.modules():  # dropout off: both must compute the same function
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        out = model(input_ids=ids, attention_mask=mask, labels=labels)
        out.loss.backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[1].logits, outputs[0].logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(outputs[1].loss, outputs[0].loss)
    for (name, p), q in zip(full.named_parameters(), fast.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_the_last_layer_really_computes_one_position():
    _, fast, _ = _pair("sdpa")
    shapes = []
    fast.bert.encoder.layer[-1].intermediate.register_forward_hook(lambda m, i, o: shapes.append(tuple(i[0].shape)))
    fast(input_ids=torch.randint(5, 100, (3, 8)))
    assert shapes == [(3, 1, 32)]


def test_models_reading_every_position_are_left_alone():
    _, fast, applied = _pair("sdpa", "BertForTokenClassification")
    assert not applied
    out = fast(input_ids=torch.randint(5, 100, (2, 6)))
    assert out.logits.shape == (2, 6, 3)


def test_training_with_and_without_it_ends_with_the_same_weights(tmp_path, tiny_model):
    # without dropout: the two paths draw different numbers of dropout masks
    model = tmp_path / "no-dropout"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (model / "config.json").write_text(json.dumps(config))
    common = {"trainer.max_steps": 4, "trainer.eval_every": 0, "trainer.save_every": 0}
    train_tiny(tmp_path / "fast", str(model), **common)
    train_tiny(tmp_path / "full", str(model), **common, **{"classification.first_token_last_layer": False})
    fast, full = load_weights(tmp_path / "fast" / "model"), load_weights(tmp_path / "full" / "model")
    assert sorted(fast) == sorted(full)  # the saved model has every parameter, under its usual name
    for name in full:
        torch.testing.assert_close(fast[name], full[name], atol=2e-5, rtol=1e-4, msg=name)
