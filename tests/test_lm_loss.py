"""The chunked language-model loss (sft_core.engine.lm_loss) and the memory a run reports.

The loss over chunks of label tokens must equal the plain cross-entropy on the full logits (loss
and every gradient), and must not hold the full-vocabulary logits: the live tensor bytes of a loss
and its backward are measured, not assumed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from sft_core.engine import lm_loss
from sft_core.engine.lm_loss import causal_lm_logps, causal_lm_loss, linear_cross_entropy, linear_log_probs
from sft_core.engine.memory import LiveTensors
from sft_core.host.manager import PluginHost

from helpers import make_config, train_tiny

IGNORE = -100


def _inputs(n=37, hidden=16, vocab=101, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, hidden, generator=g, requires_grad=True)
    w = torch.randn(vocab, hidden, generator=g, requires_grad=True)
    b = torch.randn(vocab, generator=g, requires_grad=True) if bias else None
    t = torch.randint(0, vocab, (n,), generator=g)
    t[::5] = IGNORE  # ignored positions inside chunks and at chunk edges
    return h, w, b, t


def _grads(*tensors):
    out = [x.grad.clone() if x is not None and x.grad is not None else None for x in tensors]
    for x in tensors:
        if x is not None:
            x.grad = None
    return out


@pytest.mark.parametrize("rows", [1, 7, 36, 37, 1000])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_linear_cross_entropy_equals_the_plain_loss_and_gradients(rows, bias, reduction):
    h, w, b, t = _inputs(bias=bias)
    plain = F.cross_entropy(F.linear(h, w, b), t, ignore_index=IGNORE, reduction=reduction)
    plain.backward()
    expected = _grads(h, w, b)
    chunked = linear_cross_entropy(h, w, t, b, reduction=reduction, chunk_elements=rows * w.shape[0])
    chunked.backward()
    got = _grads(h, w, b)
    assert torch.allclose(chunked, plain, atol=1e-5, rtol=1e-6), (chunked.item(), plain.item())
    for name, e, g in zip("hwb", expected, got):
        if e is None:
            assert g is None
            continue
        assert torch.allclose(g, e, atol=1e-5, rtol=1e-5), (name, (g - e).abs().max().item())


def test_a_frozen_weight_gets_no_gradient_and_the_hidden_states_the_same_one():
    h, w, _, t = _inputs(bias=False)
    w.requires_grad_(False)  # LoRA: the output layer is frozen
    F.cross_entropy(F.linear(h, w), t, ignore_index=IGNORE).backward()
    expected = h.grad.clone()
    h.grad = None
    linear_cross_entropy(h, w, t, chunk_elements=5 * w.shape[0]).backward()
    assert w.grad is None
    assert torch.allclose(h.grad, expected, atol=1e-6)


def test_bf16_autocast_matches_the_plain_computation_under_autocast():
    h, w, b, t = _inputs(n=64, hidden=32, vocab=300)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = F.cross_entropy(F.linear(h, w, b).float(), t, ignore_index=IGNORE)
    plain.backward()
    expected = _grads(h, w, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chunked = linear_cross_entropy(h, w, t, b, chunk_elements=9 * w.shape[0])
    chunked.backward()
    got = _grads(h, w, b)
    assert chunked.dtype == torch.float32
    # the same bf16 products and fp32 softmax; only the order of the sums differs
    assert abs(chunked.item() - plain.item()) <= 1e-3 * abs(plain.item())
    for name, e, g in zip("hwb", expected, got):
        assert g.dtype == e.dtype
        assert (g - e).abs().max().item() <= 2e-2 * e.abs().max().item(), name


def test_per_token_losses_without_gradients():
    h, w, b, t = _inputs()
    with torch.no_grad():
        plain = F.cross_entropy(F.linear(h, w, b), t, ignore_index=IGNORE, reduction="none")
        chunked = linear_cross_entropy(h, w, t, b, reduction="none", chunk_elements=4 * w.shape[0])
    assert torch.allclose(chunked, plain, atol=1e-5)
    assert (chunked[t == IGNORE] == 0).all()
    with pytest.raises(ValueError, match="no_grad"):
        linear_cross_entropy(h, w, t, b, reduction="none")
    with pytest.raises(ValueError, match="reduction"):
        linear_cross_entropy(h, w, t, b, reduction="max")


# --- on a causal LM ---------------------------------------------------------------------------

def tiny_llama(vocab=211, tied=True, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
                         max_position_embeddings=256)
    return LlamaForCausalLM(config)


def _batch(vocab, rows=3, length=20, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0  # a padded row
    labels = ids.clone()
    labels[:, :6] = IGNORE  # the prompt
    labels[mask == 0] = IGNORE
    labels[2, 9] = IGNORE  # a hole inside an answer
    return {"input_ids": ids, "attention_mask": mask, "use_cache": False}, labels


def _loss_and_grads(model, inputs, labels, chunked, chunk_elements=None):
    model.zero_grad(set_to_none=True)
    loss = causal_lm_loss(model, inputs, labels, chunked=chunked,
                          **({"chunk_elements": chunk_elements} if chunk_elements else {}))
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("lora", [False, True])
def test_causal_lm_loss_chunked_equals_the_models_own_loss(tied, lora):
    model = tiny_llama(tied=tied)
    if lora:
        from sft_core.config import PeftConfig
        from sft_core.models import adapters

        model = adapters.apply(model, PeftConfig(method="lora", r=4, dropout=0.0), "tiny")
    model.train()
    inputs, labels = _batch(211)
    own = model(**inputs, labels=labels).loss  # transformers' own shifted loss
    plain, plain_grads = _loss_and_grads(model, inputs, labels, chunked=False)
    chunked, grads = _loss_and_grads(model, inputs, labels, chunked=True, chunk_elements=5 * 211)
    assert torch.allclose(plain, own.detach(), atol=1e-6)
    assert torch.allclose(chunked, plain, atol=1e-6), (chunked.item(), plain.item())
    assert grads.keys() == plain_grads.keys() and grads
    trained_head = any("lm_head" in n or "embed_tokens" in n for n in grads)
    # the output weight is trained in full fine-tuning, and under LoRA when untied (a head of its own)
    assert trained_head == (not lora or not tied)
    for name in grads:
        assert torch.allclose(grads[name], plain_grads[name], atol=1e-5, rtol=1e-5), name


@pytest.mark.parametrize("rows", [1, 7, 37, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_log_probs_equal_the_plain_log_softmax_under_any_row_weights(rows, bias):
    h, w, b, t = _inputs(bias=bias)
    weights = torch.linspace(-2.0, 3.0, len(t))  # a loss that weights each token differently (DPO does)
    plain = F.log_softmax(F.linear(h, w, b), dim=-1).gather(1, t.clamp(min=0).unsqueeze(1)).squeeze(1)
    plain = plain * (t != IGNORE)
    (plain * weights).sum().backward()
    expected = _grads(h, w, b)
    chunked = linear_log_probs(h, w, t, b, chunk_elements=rows * w.shape[0])
    (chunked * weights).sum().backward()
    got = _grads(h, w, b)
    assert torch.allclose(chunked, plain, atol=1e-5), (chunked - plain).abs().max()
    assert (chunked[t == IGNORE] == 0).all()
    for name, e, g in zip("hwb", expected, got):
        if e is None:
            assert g is None
        else:
            assert torch.allclose(g, e, atol=1e-4, rtol=1e-4), (name, (g - e).abs().max())


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("lora", [False, True])
def test_causal_lm_logps_chunked_equal_the_plain_ones_with_the_same_gradients(tied, lora):
    model = tiny_llama(tied=tied)
    if lora:
        from sft_core.config import PeftConfig
        from sft_core.models import adapters

        model = adapters.apply(model, PeftConfig(method="lora", r=4, dropout=0.0), "tiny")
    model.train()
    inputs, labels = _batch(211)
    results = []
    for chunked in (False, True):
        model.zero_grad(set_to_none=True)
        logps = causal_lm_logps(model, inputs, labels, chunked=chunked, chunk_elements=5 * 211)
        sums = logps.sum(1)
        # a preference-style loss: rows weighted with opposite signs
        (-F.logsigmoid(sums[0] - sums[1]) + 0.3 * sums[2]).backward()
        results.append((logps.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (plain, plain_grads), (chunked, grads) = results
    # the plain log-probabilities are the model's own logits' log-softmax at the labelled positions
    with torch.no_grad():
        logits = model(**inputs).logits[:, :-1].float()
    targets = labels[:, 1:]
    own = torch.log_softmax(logits, -1).gather(2, targets.clamp(min=0).unsqueeze(2)).squeeze(2) * (targets != IGNORE)
    assert torch.allclose(plain, own, atol=1e-5)
    assert torch.allclose(chunked, plain, atol=1e-5), (chunked - plain).abs().max()
    assert grads.keys() == plain_grads.keys() and grads
    for name in grads:
        assert torch.allclose(grads[name], plain_grads[name], atol=1e-5, rtol=1e-4), name


def test_per_token_losses_of_a_model_in_evaluation():
    model = tiny_llama().eval()
    inputs, labels = _batch(211)
    with torch.no_grad():
        plain = causal_lm_loss(model, inputs, labels, chunked=False, reduction="none")
        chunked = causal_lm_loss(model, inputs, labels, chunked=True, reduction="none")
        logits = model(**inputs).logits
        full = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=IGNORE, reduction="none")
    assert plain.shape == chunked.shape == labels[:, 1:].shape
    assert torch.allclose(plain, full, atol=1e-5) and torch.allclose(chunked, full, atol=1e-5)


def test_a_model_whose_logits_are_not_its_output_layers_falls_back_and_says_so(capsys):
    model = tiny_llama(seed=3)

    def soft_cap(module, args, output):  # as Gemma 2 caps its logits after the output layer
        output.logits = 3.0 * torch.tanh(output.logits / 3.0)
        return output

    model.register_forward_hook(soft_cap)
    inputs, labels = _batch(211)
    with torch.no_grad():
        expected = F.cross_entropy(model(**inputs).logits[:, :-1].reshape(-1, 211), labels[:, 1:].reshape(-1))
        got = causal_lm_loss(model, inputs, labels, chunked=True)
    assert torch.allclose(got, expected, atol=1e-6)
    assert "trainer.chunked_loss" in capsys.readouterr().err
    assert lm_loss._EXACT[model] is False
    exact = tiny_llama(seed=4)
    with torch.no_grad():
        causal_lm_loss(exact, inputs, labels)
    assert lm_loss._EXACT[exact] is True


def test_the_instruct_loss_never_holds_the_full_vocabulary_logits(tmp_path, monkeypatch):
    """A tiny model with a large vocabulary: the logits of the batch's label tokens dominate memory."""
    vocab, rows, length = 40_000, 4, 64
    model = tiny_llama(vocab=vocab, tied=True)
    model.train()
    host = PluginHost()
    inputs, labels = _batch(vocab, rows, length)
    batch = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"], "labels": labels}
    label_tokens = int((labels[:, 1:] != IGNORE).sum())
    full_logits = label_tokens * vocab * 4  # bytes, fp32
    monkeypatch.setattr(lm_loss, "CHUNK_ELEMENTS", 16 * vocab)
    chunk_logits = 16 * vocab * 4

    peaks = {}
    for chunked in (False, True):
        config = make_config(host, "instruct", model="unused", output_dir=str(tmp_path),
                             **{"trainer.chunked_loss": chunked})
        task = host.get_task("instruct").factory(config)
        model.zero_grad(set_to_none=True)
        with LiveTensors() as live:
            task.compute_loss(model, batch).backward()
        peaks[chunked] = live
    weight = vocab * 32 * 4  # the output weight's gradient (tied: trained), and its accumulation buffer
    # the plain loss holds the logits and their softmax: the measurement sees them
    assert peaks[False].peak_bytes > 2 * full_logits
    assert peaks[False].largest_bytes >= full_logits
    # chunked: a few chunks' worth of logits at most, besides the weight's gradients
    assert peaks[True].largest_bytes < full_logits / 4
    assert peaks[True].peak_bytes < 4 * chunk_logits + 3 * weight, (peaks[True].peak_bytes, full_logits)


def test_chunked_and_plain_training_give_the_same_model_and_the_run_reports_memory(tmp_path):
    from sft_core.models.tiny import tiny_decoder

    texts = [f"the cat {w} on the mat number {i}" for i, w in enumerate(["sat", "ran", "lay", "slept"] * 10)]
    llama = tiny_decoder(tmp_path / "llama", texts, family="llama", pad="eos")
    values = {"task": "instruct", "instruct.chat_template": "chatml", "trainer.max_steps": 4, "trainer.eval_every": 0,
              "trainer.save_every": 0, "trainer.batch_size": 4, "instruct.generate": False, "peft.method": "none"}
    results = {}
    for chunked in (True, False):
        results[chunked] = train_tiny(tmp_path / str(chunked), llama, **values, **{"trainer.chunked_loss": chunked})
    from helpers import load_weights

    a, b = load_weights(tmp_path / "True" / "model"), load_weights(tmp_path / "False" / "model")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
    losses = [[json.loads(line)["loss"] for line in (tmp_path / str(c) / "metrics.jsonl").read_text().splitlines()
               if '"loss"' in line and "event" not in line] for c in (True, False)]
    assert losses[0] and losses[0] == pytest.approx(losses[1], abs=1e-5)

    train = json.loads((tmp_path / "True" / "train_results.json").read_text())
    info = json.loads((tmp_path / "True" / "run_info.json").read_text())
    assert train["peak_rss_mb"] > 100  # torch alone is more than that
    assert info["memory"]["peak_rss_mb"] >= train["peak_rss_mb"]
    assert train["train_tokens"] > train["train_samples"]  # tokens, not examples
    assert train["train_tokens_per_second"] == pytest.approx(train["train_tokens"] / train["train_runtime"], rel=1e-2)
    assert info["speed"]["train_tokens_per_second"] == train["train_tokens_per_second"]


@pytest.mark.parametrize("method", ["full", "lora", "dora"])
def test_gradient_checkpointing_with_the_chunked_loss_gives_the_same_gradients(method):
    """Checkpointed layers recompute their activations in the backward pass; with LoRA or DoRA on a
    frozen base the embeddings' output needs no gradient, and the checkpointed layers still get theirs."""
    from sft_core.config import PeftConfig
    from sft_core.models import adapters
    from sft_core.models.backbone import enable_gradient_checkpointing

    inputs, labels = _batch(211)
    results = []
    for checkpointing in (False, True):
        model = tiny_llama(tied=False, seed=5)
        if checkpointing:
            enable_gradient_checkpointing(model, "tiny")
        if method != "full":
            model = adapters.apply(model, PeftConfig(method="lora", r=4, dropout=0.0, dora=method == "dora"), "tiny")
        model.train()
        results.append(_loss_and_grads(model, inputs, labels, chunked=True, chunk_elements=7 * 211))
    (loss, grads), (loss_gc, grads_gc) = results
    assert torch.allclose(loss, loss_gc, atol=1e-6)
    assert grads.keys() == grads_gc.keys()
    assert any(".layers.0." in n for n in grads)  # the first checkpointed layer is trained
    for name in grads:
        assert torch.allclose(grads[name], grads_gc[name], atol=1e-5, rtol=1e-4), name


# --- trainer.release_memory ---------------------------------------------------------------------

RELEASE_SCRIPT = """
import sys, torch
from sft_core.engine.memory import release_freed_memory

def rss():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20

if sys.argv[1] == 'release':
    assert release_freed_memory()
else:
    torch.ones(1 << 20).sum()  # a freed 4 MB block: glibc now serves blocks of that size from its heap
blocks, kept = [], []
for _ in range(64):  # 64 blocks of 4 MB, written, each followed by a 2 MB block that stays (as a step's
    blocks.append(torch.ones(1 << 20))  # temporaries lie between the activations it keeps)
    kept.append(torch.ones(1 << 19))
held = rss()
del blocks
print(held - rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_release_memory_gives_freed_blocks_back_to_the_system():
    freed = {}
    for mode in ("release", "default"):
        done = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT, mode], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        freed[mode] = float(done.stdout.strip().splitlines()[-1])
    assert freed["release"] > 200, freed  # the 256 MB went back at once
    assert freed["default"] < 64, freed  # by default the heap keeps them (what the setting is for)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_a_run_with_release_memory_through_the_command_line(tmp_path):
    from sft_core.models.tiny import tiny_decoder

    from helpers import sft

    llama = tiny_decoder(tmp_path / "llama", [f"the cat sat on mat {i}" for i in range(30)], family="llama", pad="eos")
    done = sft("run", "--task", "instruct", "--model", llama, "--output-dir", tmp_path / "run",
               "instruct.chat_template=chatml", "trainer.max_steps=2", "trainer.eval_every=0", "trainer.save_every=0",
               "instruct.generate=false", "trainer.release_memory=true", "trainer.gradient_checkpointing=true")
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["train_steps"] == 2 and summary["peak_rss_mb"] > 100 and summary["train_tokens_per_second"] > 0
    assert "trainer.release_memory: not available" not in done.stderr  # available here: nothing to say
