"""Continuous batching (``sft_core.engine.generation``): greedy output equal to one request at a time
with staggered arrivals, per-request settings inside one batch, cancellation, the token budget,
failures, what is not scheduled, and evaluation by generation equal to ``model.generate``'s."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from sft_core.engine.generation import ContinuousBatcher, Request, unsupported
from sft_core.testing import tiny_decoder

TEXTS = ["the cat sat on the mat", "a dog runs in the park", "what is the capital of France?",
         "Paris is the capital of France.", "name a colour: blue, red, green"] * 4


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def lm(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_decoder(tmp_path_factory.mktemp(request.param), TEXTS, family=request.param, hidden=64)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # larger weights: varied greedy text, not one token over and over
        torch.manual_seed(0)
        for parameter in model.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    return model, AutoTokenizer.from_pretrained(folder)


def prompts(n: int, seed: int = 1) -> list[list[int]]:
    """Prompts of mixed lengths (3 to 60 tokens)."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 200, (int(length),), generator=g).tolist()
            for length in torch.randint(3, 61, (n,), generator=g)]


def alone(model, prompt: list[int], max_new: int, stop=None) -> list[int]:
    """Greedy ``model.generate`` for one prompt, without padding: the reference."""
    out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                         max_new_tokens=max_new, do_sample=False, eos_token_id=stop, pad_token_id=0)
    tokens = out[0, len(prompt):].tolist()
    return tokens[:tokens.index(stop)] if stop in tokens else tokens


def drain(batcher: ContinuousBatcher, check=None) -> None:
    while batcher.running or batcher.waiting:
        batcher.step()
        if check is not None:
            check(batcher)


def test_greedy_equals_one_request_at_a_time_with_staggered_arrivals(lm):
    model, _ = lm
    given = prompts(9)
    limits = [20, 7, 33, 12, 25, 3, 30, 18, 9]
    expected = [alone(model, p, n) for p, n in zip(given, limits)]
    batcher = ContinuousBatcher(model, pad_id=0, max_batch_size=4)
    requests = [Request(p, n) for p, n in zip(given, limits)]
    for i, request in enumerate(requests):  # each arrives while others are mid-way
        batcher.submit(request)
        for _ in range(i % 3 + 1):
            batcher.step()
    drain(batcher)
    assert [r.tokens for r in requests] == expected
    assert all(r.finish_reason == "length" for r in requests)
    assert batcher.peak_rows == 4  # they did share the batch, up to its size
    assert batcher.running == [] and batcher.width == 0  # everything left: no cache kept


def test_each_request_keeps_its_settings_inside_one_batch(lm):
    model, tokenizer = lm
    p = prompts(5, seed=3)
    free = alone(model, p[1], 12)
    stop_token = free[4]  # greedy writes it as its 5th token: the request with it as end token stops before it
    cut_at = free.index(stop_token)
    at = next(k for k in range(1, 13) if (text := tokenizer.decode(free[:k])).strip() and not text.endswith("\ufffd"))
    stop_text = tokenizer.decode(free[:at])[-1]  # a character that greedy decoding has written by token ``at``
    requests = [Request(p[0], 5), Request(p[1], 12, frozenset({stop_token})), Request(p[1], 12, stop_texts=(stop_text,)),
                Request(p[2], 10, temperature=1.0, top_k=50, seed=7), Request(p[3], 10, temperature=0.7, top_p=0.9, seed=11)]
    batcher = ContinuousBatcher(model, pad_id=0, max_batch_size=8, tokenizer=tokenizer)
    batcher.generate_all(requests)
    assert batcher.peak_rows == 5
    assert requests[0].tokens == alone(model, p[0], 5) and requests[0].finish_reason == "length"
    assert requests[1].tokens == free[:cut_at] and requests[1].finish_reason == "stop"
    assert stop_text in requests[2].text and requests[2].finish_reason == "stop" and len(requests[2].tokens) <= at
    # a seeded draw is the same alone as beside others, and a different seed draws differently
    again = ContinuousBatcher(model, pad_id=0).generate_all([Request(p[2], 10, temperature=1.0, top_k=50, seed=7)])
    other = ContinuousBatcher(model, pad_id=0).generate_all([Request(p[2], 10, temperature=1.0, top_k=50, seed=8)])
    assert again[0].tokens == requests[3].tokens != other[0].tokens
    assert len(requests[3].tokens) == 10 and requests[3].tokens != alone(model, p[2], 10)


def test_streamed_text_arrives_token_by_token_and_adds_up(lm):
    model, tokenizer = lm
    pieces: list[str] = []
    request = Request(prompts(1)[0], 15, on_token=lambda r, token, piece: pieces.append(piece))
    ContinuousBatcher(model, pad_id=0, tokenizer=tokenizer).generate_all([request])
    assert len(pieces) == 15 and "".join(pieces) == tokenizer.decode(request.tokens, skip_special_tokens=True)


def test_a_cancelled_request_frees_its_slot_for_the_next(lm):
    model, _ = lm
    first, second = prompts(2, seed=5)
    batcher = ContinuousBatcher(model, pad_id=0, max_batch_size=1)
    long, waiting = Request(first, 400), Request(second, 6)
    batcher.submit(long)
    batcher.submit(waiting)
    for _ in range(3):
        batcher.step()
    assert batcher.running == [long] and list(batcher.waiting) == [waiting]
    batcher.cancel(long)
    batcher.step()
    # three steps: the prefill's token and one decoded token each; nothing after the cancel
    assert long.finish_reason == "cancelled" and long.done.is_set() and len(long.tokens) == 4
    assert batcher.running == [waiting]
    drain(batcher)
    assert waiting.tokens == alone(model, second, 6)


def test_the_token_budget_bounds_the_padded_cache_and_the_rest_waits(lm):
    model, _ = lm
    given = prompts(8, seed=9)
    budget = 240
    seen = []

    def check(batcher):
        seen.append((len(batcher.running), batcher.width, len(batcher.waiting)))
        assert len(batcher.running) * batcher.width <= budget

    batcher = ContinuousBatcher(model, pad_id=0, max_batch_size=8, max_batch_tokens=budget)
    requests = [Request(p, 10) for p in given if len(p) + 10 <= budget]
    too_long = Request(list(range(3, 3 + budget)), 10)
    for request in [*requests, too_long]:
        batcher.submit(request)
    drain(batcher, check)
    assert max(rows for rows, _, _ in seen) < len(requests)  # the budget, not the batch size, held them back
    assert any(waiting for _, _, waiting in seen)
    assert [r.tokens for r in requests] == [alone(model, r.prompt, 10) for r in requests]
    assert too_long.finish_reason == "error" and "exceed the batch token budget" in str(too_long.error)


def test_a_failing_step_fails_its_requests_and_the_batcher_goes_on(lm, monkeypatch):
    model, _ = lm
    p = prompts(3, seed=4)
    batcher = ContinuousBatcher(model, pad_id=0)
    batcher.generate_all([Request(p[0], 2)])
    real = batcher._forward
    calls = {"n": 0}

    def failing(*args):
        calls["n"] += 1
        if calls["n"] == 2:  # the first decoding step after the prefill
            raise RuntimeError("boom")
        return real(*args)

    monkeypatch.setattr(batcher, "_forward", failing)
    broken = batcher.generate_all([Request(p[1], 5)])
    assert broken[0].finish_reason == "error" and "boom" in str(broken[0].error)
    monkeypatch.setattr(batcher, "_forward", real)
    (fine,) = batcher.generate_all([Request(p[2], 5)])
    assert fine.finish_reason == "length" and fine.tokens == alone(model, p[2], 5)


def test_serve_forever_runs_requests_from_other_threads_and_stops(lm):
    model, _ = lm
    batcher = ContinuousBatcher(model, pad_id=0, max_batch_size=4)
    worker = threading.Thread(target=batcher.serve_forever, daemon=True)
    batcher.pause()
    worker.start()
    given = prompts(4, seed=6)
    requests = [batcher.submit(Request(p, 8)) for p in given]
    assert not any(r.done.is_set() for r in requests)
    batcher.resume()
    for request in requests:
        assert request.done.wait(60)
    batcher.stop()
    worker.join(30)
    assert not worker.is_alive()
    assert batcher.peak_rows == 4  # queued while paused: all four joined at one step
    assert [r.tokens for r in requests] == [alone(model, p, 8) for p in given]


def test_what_continuous_batching_does_not_schedule(tmp_path):
    from transformers import (AutoModelForCausalLM, MarianConfig, MarianMTModel, MistralConfig,
                              MistralForCausalLM)

    marian = MarianMTModel(MarianConfig(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1,
                                        encoder_attention_heads=2, decoder_attention_heads=2,
                                        encoder_ffn_dim=16, decoder_ffn_dim=16, pad_token_id=0, eos_token_id=1,
                                        decoder_start_token_id=0))
    assert unsupported(marian) == "an encoder-decoder model"
    mistral = MistralForCausalLM(MistralConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                               num_attention_heads=2, num_key_value_heads=1, sliding_window=8))
    assert "sliding window" in unsupported(mistral)
    llama = AutoModelForCausalLM.from_pretrained(tiny_decoder(tmp_path, TEXTS))
    assert unsupported(llama) is None
    llama.generation_config.repetition_penalty = 1.3
    assert unsupported(llama) == "its generation_config sets repetition_penalty"


def test_evaluation_and_prediction_by_generation_equal_model_generate(tmp_path, monkeypatch):
    """The instruct task's evaluation and ``sft predict`` generate with continuous batching (answers
    of different lengths, several batches); the same model through ``model.generate`` in static
    batches gives the same texts and the same scores."""
    from sft_core import engine
    from sft_core.engine import evaluation
    from sft_core.host import PluginHost
    from sft_core.testing import Case, build_tiny_model, example_texts, run_engine

    case = Case("instruct", tiny_model=lambda folder, examples: tiny_decoder(folder, example_texts(examples)),
                overrides={"instruct.chat_template": "chatml", "instruct.max_new_tokens": 12, "peft.method": "none",
                           "trainer.max_length": 128, "trainer.eval_batch_size": 3})
    run_engine(case, build_tiny_model(case, tmp_path / "tiny"), tmp_path / "run")
    model = str(tmp_path / "run" / "model")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lm = AutoModelForCausalLM.from_pretrained(model)
    with torch.random.fork_rng(devices=[]), torch.no_grad():  # answers of varied lengths, not an end token at once
        torch.manual_seed(1)
        for parameter in lm.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
        end = AutoTokenizer.from_pretrained(model).convert_tokens_to_ids("<|im_end|>")
        lm.get_output_embeddings().weight[end] *= 4  # now and then the end token wins: answers end early
    lm.save_pretrained(model)
    predictor = engine.Predictor(model)
    assert predictor.continuous_batching
    examples = predictor.generation_examples(prompts=[t * (1 + i % 3) for i, t in enumerate(TEXTS[:7])])
    lengths: list = []
    continuous = predictor.predict_examples(examples, lengths=lengths)
    static = predictor._predict_static(examples, None, None, None)
    assert [p["text"] for p in continuous] == [p["text"] for p in static]
    assert len(lengths) == 7 and len({n for n, _ in lengths}) > 2  # several answer lengths, so sequences left early
    def scores(folder: str) -> dict:
        metrics = engine.evaluate_saved(model, None, str(tmp_path / folder), PluginHost())["metrics"]
        return {k: v for k, v in metrics.items() if "runtime" not in k and "per_second" not in k}

    continuous_scores = scores("continuous")
    monkeypatch.setattr(evaluation, "generation_plan", lambda *args: None)  # model.generate in static batches
    assert scores("static") == continuous_scores and "f1" in continuous_scores
    written = (tmp_path / "continuous" / "predictions.jsonl").read_text()
    assert written == (tmp_path / "static" / "predictions.jsonl").read_text()
    assert len({json.loads(line)["generation"] for line in written.splitlines()}) > 3
