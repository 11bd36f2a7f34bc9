"""The instruct task on tiny random decoders: label masks, the template check, exact packing,
generation, mixtures, and other tasks' data as instructions."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from sft_core.errors import ConfigError, DataError
from sft_core.host.manager import PluginHost
from sft_core.testing import tiny_decoder

from helpers import invoke, load_weights, make_config, train_tiny

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "plugins" / "sft_instruct" / "sample_data"

WORDS = "the cat dog sat ran on a mat red blue green what is capital of colour answer yes no".split()

#: A template whose assistant turns end with the EOS token, for a tokenizer that pads with EOS.
EOS_TEMPLATE = ("{% for m in messages %}{{ '### ' + m['role'] + ':\n' + m['content'] }}"
                "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\n' }}{% endfor %}"
                "{% if add_generation_prompt %}{{ '### assistant:\n' }}{% endif %}")


def corpus() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(200)] + [
        "What is the capital of France? Paris", "system user assistant ### :"]


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> str:
    return tiny_decoder(tmp_path_factory.mktemp("llama"), corpus(), family="llama", pad="eos")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory) -> str:
    return tiny_decoder(tmp_path_factory.mktemp("gpt2"), corpus(), family="gpt2", pad="eos")


def task_for(host, model: str, tmp_path: Path, **values):
    config = make_config(host, "instruct", model=model, output_dir=str(tmp_path), **values)
    task = host.get_task("instruct").factory(config)
    return config, task


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


SHAPES = {
    "messages": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat"},
                              {"role": "assistant", "content": "sat on a mat"}, {"role": "user", "content": "red?"},
                              {"role": "assistant", "content": "blue"}]},
    "prompt_completion": {"prompt": "what colour", "completion": "green dog"},
    "alpaca": {"instruction": "answer yes", "input": "the dog ran", "output": "yes"},
    "sharegpt": {"conversations": [{"from": "human", "value": "is the cat red"}, {"from": "gpt", "value": "no"},
                                   {"from": "human", "value": "blue?"}, {"from": "gpt", "value": "yes it is"}]},
}
ANSWERS = {"messages": ["sat on a mat", "blue"], "prompt_completion": ["green dog"], "alpaca": ["yes"],
           "sharegpt": ["no", "yes it is"]}


def features_of(task, tokenizer, examples):
    import datasets

    rows = [dict(e, example_id=i) for i, e in enumerate(examples)]
    table = datasets.Dataset.from_list(rows)
    return table.map(task.preprocess, batched=True, remove_columns=list(rows[0]))


@pytest.mark.parametrize("template", ["chatml", "eos"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_unmasked_labels_are_the_answers_and_their_end_of_turn(tmp_path, host, llama, shape, template):
    option = "chatml" if template == "chatml" else str(write_text(tmp_path / "t.jinja", EOS_TEMPLATE))
    data = write_jsonl(tmp_path / "data.jsonl", [SHAPES[shape]])
    _, task = task_for(host, llama, tmp_path, **{"instruct.chat_template": option})
    tokenizer = task.load_tokenizer(llama)
    from sft_core.models.backbone import ensure_pad_token

    ensure_pad_token(tokenizer, llama)
    end = "<|im_end|>" if template == "chatml" else tokenizer.eos_token
    if template == "eos":
        assert tokenizer.pad_token_id == tokenizer.eos_token_id  # pad = EOS = end of turn
    examples = task.load("train", str(data))
    features = features_of(task, tokenizer, examples)
    batch = task.collate([features[0], *features])  # padded next to a copy of itself: padding must not matter
    labels = batch["labels"][0].tolist()
    ids = batch["input_ids"][0].tolist()
    runs, current = [], []
    for token, label in zip(ids, labels):
        if label != -100:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    assert [tokenizer.decode(run) for run in runs] == [answer + end for answer in ANSWERS[shape]]


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_last_turn_and_all(tmp_path, host, llama):
    data = write_jsonl(tmp_path / "data.jsonl", [SHAPES["messages"]])
    for train_on, expected in (("last_turn", ["blue<|im_end|>"]), ("all", None)):
        _, task = task_for(host, llama, tmp_path, **{"instruct.chat_template": "chatml", "instruct.train_on": train_on})
        tokenizer = task.load_tokenizer(llama)
        features = features_of(task, tokenizer, task.load("train", str(data)))
        labels = features[0]["labels"]
        kept = [t for t in labels if t != -100]
        if expected is None:
            assert kept == features[0]["input_ids"][1:]  # everything but the first token
        else:
            assert tokenizer.decode(kept) == expected[0]


# --- the template check ---------------------------------------------------------------------

def _check(tmp_path, host, model, template_text: str, rows=None):
    path = write_text(tmp_path / "template.jinja", template_text)
    data = write_jsonl(tmp_path / "data.jsonl", rows or [SHAPES["prompt_completion"]])
    _, task = task_for(host, model, tmp_path, **{"instruct.chat_template": str(path)})
    tokenizer = task.load_tokenizer(model)
    return features_of(task, tokenizer, task.load("train", str(data)))


def test_template_check_generation_prompt_not_a_prefix(tmp_path, host, llama):
    # training renders "### assistant:" but the generation prompt asks with "### reply:"
    bad = EOS_TEMPLATE.replace("'### assistant:\n'", "'### reply:\n'")
    assert bad != EOS_TEMPLATE
    with pytest.raises(DataError, match="not a token prefix of the whole conversation"):
        _check(tmp_path, host, llama, bad)


def test_template_check_bos_twice(tmp_path, host, llama):
    with pytest.raises(DataError, match="BOS twice"):
        _check(tmp_path, host, llama, "{{ bos_token }}{{ bos_token }}" + EOS_TEMPLATE)


def test_template_check_empty_assistant_mask(tmp_path, host, llama):
    # a template that drops assistant messages leaves nothing to learn
    silent = ("{% for m in messages %}{% if m['role'] != 'assistant' %}{{ m['content'] + '\n' }}{% endif %}"
              "{% endfor %}")
    with pytest.raises(ConfigError, match="renders no tokens for assistant messages"):
        _check(tmp_path, host, llama, silent)


def test_example_without_an_answer_is_named(tmp_path, host, llama):
    data = write_jsonl(tmp_path / "data.jsonl", [SHAPES["alpaca"], {"instruction": "no output here"}])
    _, task = task_for(host, llama, tmp_path, **{"instruct.chat_template": "chatml"})
    with pytest.raises(DataError, match=r"data.jsonl line 2: no assistant answer.*output"):
        task.load("train", str(data))


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "robot", "content": "x"}]}, "line 1: messages\\[0\\].role must be one of"),
    ({"text": "hello"}, "line 1: not an instruction record"),
    ({"prompt": 3, "completion": "x"}, "line 1: prompt must be a string"),
])
def test_bad_records_get_a_clear_error(tmp_path, host, llama, row, message):
    data = write_jsonl(tmp_path / "data.jsonl", [row])
    _, task = task_for(host, llama, tmp_path)
    with pytest.raises(DataError, match=message):
        task.load("train", str(data))


@pytest.mark.parametrize("roles", [("user", "assistant", "user"), ("system", "assistant", "user")])
@pytest.mark.parametrize("split", ["train", "eval"])
def test_a_conversation_ending_with_a_user_turn_is_named(tmp_path, host, llama, roles, split):
    """Once a TypeError deep in finish_features (train) or collate (after training, at the first
    evaluation); now one line naming the file and the line, before any model loads."""
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}
    bad = {"messages": [{"role": role, "content": f"turn {i}"} for i, role in enumerate(roles)]}
    data = write_jsonl(tmp_path / "data.jsonl", [good, bad])
    _, task = task_for(host, llama, tmp_path)
    with pytest.raises(DataError, match=r"data.jsonl line 2: the conversation ends with a user turn that no "
                                        r"assistant answer follows"):
        task.load(split, str(data))
    assert [m["role"] for m in task.load("predict", str(data))[1]["messages"]] == list(roles)


def test_model_without_a_chat_template_is_told_what_to_set(tmp_path, host, llama):
    _, task = task_for(host, llama, tmp_path)
    with pytest.raises(ConfigError, match="instruct.chat_template: chatml"):
        task.load_tokenizer(llama)


# --- exact packing --------------------------------------------------------------------------

def _packing_case(tmp_path, host, model, n=6, attention=None):
    rng = random.Random(1)
    rows = [{"prompt": " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 9))),
             "completion": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))} for _ in range(n)]
    data = write_jsonl(tmp_path / "pack.jsonl", rows)
    loaded = {}
    for packing in (False, True):
        config, task = task_for(host, model, tmp_path, **{"instruct.chat_template": "chatml",
                                                          "instruct.packing": packing, "trainer.max_length": 96,
                                                          "instruct.attention": attention})
        from sft_core.engine import load_model

        tokenizer, net = load_model(task, model)
        examples = task.load("train", str(data))
        features = task.finish_features(features_of(task, tokenizer, examples), "train")
        loaded[packing] = (task, net, features)
    return loaded


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_packed_and_unpacked_batches_give_the_same_loss_and_gradients(tmp_path, host, llama, gpt2, family):
    model = {"llama": llama, "gpt2": gpt2}[family]
    loaded = _packing_case(tmp_path, host, model)
    task, net, unpacked = loaded[False]
    ptask, pnet, packed = loaded[True]
    assert len(packed) < len(unpacked)  # several examples share a sequence
    assert sorted(i for row in packed["examples"] for i in row) == list(range(len(unpacked)))
    for m in (net, pnet):
        m.train()
        for module in m.modules():  # dropout off: the same function on both sides
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    pnet.load_state_dict(net.state_dict())

    def per_example_and_grads(t, m, feats, rows):
        m.zero_grad(set_to_none=True)
        batch = t.collate([feats[i] for i in rows])
        loss = t.compute_loss(m, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        # per-example losses from the full logits, to compare example by example
        with torch.no_grad():
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
            logits = m(**inputs, use_cache=False).logits.float()
            token_loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), batch["labels"][:, 1:], ignore_index=-100, reduction="none")
        return loss.item(), grads, token_loss, batch

    loss_u, grads_u, tok_u, batch_u = per_example_and_grads(task, net, unpacked, range(len(unpacked)))
    loss_p, grads_p, tok_p, batch_p = per_example_and_grads(ptask, pnet, packed, range(len(packed)))
    assert "attention_mask" not in batch_p and "position_ids" in batch_p
    assert abs(loss_u - loss_p) < 1e-5
    assert grads_u.keys() == grads_p.keys()
    for name in grads_u:
        assert torch.allclose(grads_u[name], grads_p[name], atol=1e-5), name
    # example by example: the summed token losses of each example agree
    unpacked_sums = [tok_u[i].sum().item() for i in range(len(unpacked))]
    for row, members in enumerate(packed["examples"]):
        positions = packed[row]["position_ids"]
        starts = [j for j, p in enumerate(positions) if p == 0] + [len(positions)]
        for k, example in enumerate(members):
            segment = tok_p[row, starts[k]:starts[k + 1] - 1]
            assert abs(segment.sum().item() - unpacked_sums[example]) < 1e-4


def test_packing_matches_unpacked_with_eager_attention(tmp_path, host, llama):
    loaded = _packing_case(tmp_path, host, llama, attention="eager")
    task, net, unpacked = loaded[False]
    ptask, pnet, packed = loaded[True]
    assert pnet.config._attn_implementation == "eager"
    net.eval(), pnet.eval()
    with torch.no_grad():
        a = task.compute_loss(net, task.collate(list(unpacked)))
        b = ptask.compute_loss(pnet, ptask.collate(list(packed)))
    assert abs(a.item() - b.item()) < 1e-5


def test_packing_refuses_a_model_that_leaks(tmp_path, host, llama, monkeypatch):
    # a transformers whose masks ignore position-id restarts (as with a KV cache, or in releases
    # before packed-sequence masks): packed examples would see each other, and the run refuses
    import transformers.masking_utils as masking

    monkeypatch.setattr(masking, "find_packed_sequence_indices", lambda position_ids: None)
    _, task = task_for(host, llama, tmp_path, **{"instruct.chat_template": "chatml", "instruct.packing": True})
    task.load_tokenizer(llama)
    with pytest.raises(ConfigError, match="lets packed examples attend to each other"):
        task.build_model(llama)


def test_truncation_is_counted_and_follows_the_rule(tmp_path, host, llama):
    rows = [{"prompt": "the cat " * 40, "completion": "blue"}, {"prompt": "red", "completion": "dog"}]
    data = write_jsonl(tmp_path / "long.jsonl", rows)
    for rule in ("keep_start", "keep_end"):
        _, task = task_for(host, llama, tmp_path, **{"instruct.chat_template": "chatml", "trainer.max_length": 32,
                                                     "instruct.truncation": rule})
        tokenizer = task.load_tokenizer(llama)
        features = task.finish_features(features_of(task, tokenizer, task.load("train", str(data))), "train")
        report = task.report["train"]
        assert report["truncated"] == 1
        if rule == "keep_start":  # the answer of the long example is cut away: left out, and said so
            assert report["dropped_no_answer_token"] == 1 and len(features) == 1
        else:  # its end (the answer) is kept
            assert report["dropped_no_answer_token"] == 0 and len(features) == 2
            long = features[[len(x) for x in features["input_ids"]].index(32)]
            assert tokenizer.decode([t for t in long["labels"] if t != -100]) == "blue<|im_end|>"


# --- learning, generation and the engine -----------------------------------------------------

QA = [("what is the colour of the cat", "red"), ("what is the colour of the dog", "blue"),
      ("what sat on the mat", "the cat sat"), ("is the dog blue", "yes"), ("is the cat blue", "no"),
      ("what ran", "the dog ran on a mat")]


def test_a_tiny_model_learns_to_answer_exactly(tmp_path, llama):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": q, "completion": a} for q, a in QA])
    result = train_tiny(tmp_path / "run", llama, task="instruct", **{
        "data.train": str(data), "data.eval": str(data), "instruct.chat_template": "chatml", "peft.method": "none",
        "trainer.batch_size": 6, "trainer.max_steps": 150, "trainer.lr": 1e-2, "trainer.warmup_ratio": 0.0,
        "trainer.eval_every": 0, "trainer.save_every": 0, "trainer.max_length": 64})
    assert result["eval"]["exact_match"] == 100.0, result["eval"]
    predictions = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert [p["generation"] for p in predictions] == [a for _, a in QA]  # each answer ends where it should: EOS learnt
    assert predictions[0]["prompt"] == QA[0][0] and predictions[0]["references"] == [QA[0][1]]

    from sft_core import engine

    host = PluginHost()
    records = engine.predict_saved(str(tmp_path / "run" / "model"), [QA[1][0], QA[3][0]], None, host)
    assert [r["generation"] for r in records] == [QA[1][1], QA[3][1]]
    assert records[0] == {"prompt": QA[1][0], "generation": QA[1][1]}

    # sft chat: multi-turn, streamed, through the saved template
    from sft_instruct.chat import chat_session

    lines = iter([QA[0][0], QA[4][0], "/exit"])
    written: list[str] = []
    conversation = chat_session(str(tmp_path / "run" / "model"), host, read=lambda _: next(lines),
                                write=written.append)
    assert [m["content"] for m in conversation if m["role"] == "assistant"] == [QA[0][1], QA[4][1]]
    assert len(written) > 3  # the answers arrived in pieces as they were generated
    assert QA[0][1] in "".join(written)


def test_packed_training_learns_the_same_answers(tmp_path, llama):
    data = write_jsonl(tmp_path / "qa.jsonl", [{"prompt": q, "completion": a} for q, a in QA])
    result = train_tiny(tmp_path / "run", llama, task="instruct", **{
        "data.train": str(data), "data.eval": str(data), "instruct.chat_template": "chatml", "peft.method": "none",
        "instruct.packing": True, "trainer.batch_size": 1, "trainer.max_steps": 150, "trainer.lr": 1e-2,
        "trainer.warmup_ratio": 0.0, "trainer.eval_every": 0, "trainer.save_every": 0, "trainer.max_length": 256})
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["data"]["train"]["packed_sequences"] == 1 and info["data"]["train"]["examples_per_sequence"] == 6.0
    assert result["eval"]["exact_match"] == 100.0, result["eval"]


def test_max_new_tokens_follows_the_references(tmp_path, host, llama):
    _, task = task_for(host, llama, tmp_path, **{"instruct.chat_template": "chatml"})
    task.load_tokenizer(llama)
    data = write_jsonl(tmp_path / "e.jsonl", [{"prompt": "a", "completion": "the cat sat on the mat"},
                                              {"prompt": "b", "completion": "red"}])
    task.load("eval", str(data))
    longest = len(task.tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"])
    assert task._max_new_tokens() == longest + 16
    _, fixed = task_for(host, llama, tmp_path, **{"instruct.chat_template": "chatml", "instruct.max_new_tokens": 7})
    assert fixed._max_new_tokens() == 7


def test_generation_is_batched_left_padded_and_matches_one_by_one(tmp_path, host, llama):
    config, task = task_for(host, llama, tmp_path, **{"instruct.chat_template": "chatml", "instruct.max_new_tokens": 6})
    from sft_core.engine import load_model

    tokenizer, model = load_model(task, llama)
    model.eval()
    examples = task.read_inputs(["the cat", "what is the capital of the red dog on a mat"])
    features = features_of(task, tokenizer, examples)
    batch = task.collate(list(features))
    assert batch["prompt_mask"][0, 0] == 0 and batch["prompt_mask"][0, -1] == 1  # the short prompt is padded on the left
    with torch.no_grad():
        together = task.generate(model, batch["prompt_ids"], batch["prompt_mask"])
        alone = [task.generate(model, *(lambda b: (b["prompt_ids"], b["prompt_mask"]))(task.collate([f])))[0]
                 for f in features]
    assert together == alone


def test_zero_shot_eval_of_an_untrained_model(tmp_path, llama):
    out = tmp_path / "zero"
    result = invoke("eval", "--model", llama, "--task", "instruct", "--data", SAMPLE / "eval.jsonl", "--output-dir",
                    out, "instruct.chat_template=chatml", "instruct.max_new_tokens=4")
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "eval_results.json").read_text())
    assert metrics["eval_samples"] == 8 and metrics["exact_match"] == 0.0 and metrics["perplexity"] > 10
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 8


# --- mixtures -------------------------------------------------------------------------------

def test_mixture_draws_follow_each_rule():
    from sft_instruct.mixture import draw

    sizes = [100, 900]
    proportional = draw(sizes, [1, 1], "proportional", 2.0, None, seed=0)
    assert sorted(proportional) == [(0, i) for i in range(100)] + [(1, i) for i in range(900)]
    tempered = draw(sizes, [1, 1], "temperature", 2.0, None, seed=0)
    counts = [sum(1 for s, _ in tempered if s == k) for k in (0, 1)]
    assert counts == [250, 750]  # sqrt sizes 10 and 30
    weighted = draw(sizes, [3, 1], "weights", 2.0, 1000, seed=0)
    counts = [sum(1 for s, _ in weighted if s == k) for k in (0, 1)]
    assert counts == [750, 250]
    # 750 draws from 100 examples: each repeated 7 or 8 times (oversampling)
    repeats = [sum(1 for s, i in weighted if s == 0 and i == j) for j in range(100)]
    assert set(repeats) == {7, 8} and sum(repeats) == 750
    assert weighted == draw(sizes, [3, 1], "weights", 2.0, 1000, seed=0)
    assert weighted != draw(sizes, [3, 1], "weights", 2.0, 1000, seed=1)


def _mixture(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"prompt": q, "completion": ans} for q, ans in QA])
    b = write_jsonl(tmp_path / "b.jsonl", [{"instruction": f"say {w}", "output": w} for w in WORDS[:10]])
    return [{"name": "qa", "train": str(a), "eval": str(a), "weight": 1},
            {"name": "words", "train": str(b), "eval": str(b), "weight": 3}]


def test_mixture_training_evaluates_each_source_and_resumes_exactly(tmp_path, llama):
    from test_engine import Recorder

    values = {"instruct.mixture": _mixture(tmp_path), "instruct.sampling": "weights", "instruct.mixture_size": 24,
              "instruct.chat_template": "chatml", "instruct.max_new_tokens": 4, "peft.method": "none",
              "trainer.batch_size": 4, "trainer.max_steps": 6, "trainer.save_every": 2, "trainer.keep_checkpoints": 5,
              "trainer.eval_every": 0, "trainer.max_length": 64}
    straight = train_tiny(tmp_path / "straight", llama, task="instruct", **values)
    info = json.loads((tmp_path / "straight" / "run_info.json").read_text())
    assert info["data"]["mixture"] == {"qa": 6, "words": 18}
    metrics = straight["eval"]
    for name in ("qa", "words"):
        assert f"{name}/exact_match" in metrics and f"{name}/f1" in metrics
    assert metrics["score"] == pytest.approx((metrics["qa/f1"] + metrics["words/f1"]) / 200)
    sources = [json.loads(line)["source"] for line in (tmp_path / "straight" / "predictions.jsonl").read_text().splitlines()]
    assert sources == ["qa"] * 6 + ["words"] * 10

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_tiny(interrupted, llama, [Recorder(fail_at_step=3, exc=KeyboardInterrupt)], task="instruct", **values)
    train_tiny(interrupted, llama, resume=True, task="instruct", **values)
    a, b = load_weights(tmp_path / "straight" / "model"), load_weights(interrupted / "model")
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_mixture_entries_are_checked(host):
    with pytest.raises(ConfigError, match=r"instruct.mixture\[0\]: unknown key 'wieght'"):
        make_config(host, "instruct", **{"instruct.mixture": [{"train": "a.jsonl", "wieght": 2}]})
    with pytest.raises(ConfigError, match=r"instruct.mixture\[1\].weight must be a positive number"):
        make_config(host, "instruct", **{"instruct.mixture": [{"train": "a"}, {"train": "b", "weight": 0}]})


# --- other tasks' data as instructions --------------------------------------------------------

SOURCES = {
    "classification": ("sft_classification", "train.jsonl", "eval.jsonl", "accuracy", 1.0),
    "qa": ("sft_qa", "train.json", "eval.json", "f1", 100.0),
    "ner": ("sft_ner", "train.conll", "eval.conll", "f1", 1.0),
    "translation": ("sft_translation", "train.jsonl", "eval.jsonl", "bleu", 100.0),
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_a_task_data_as_instructions_scores_its_gold_answers_perfectly(tmp_path, host, llama, name):
    package, train, evaluation, metric, perfect = SOURCES[name]
    folder = ROOT / "plugins" / package / "sample_data"
    _, task = task_for(host, llama, tmp_path, **{"data.source_task": name})
    examples = task.load("eval", str(folder / evaluation))
    assert examples and all(e["messages"][-1]["role"] == "assistant" for e in examples)
    assert task.main_metric == metric
    # the reference answers, written as the model would write them, score as the task's gold predictions
    gold = [{"text": e["references"][0], "loss_sum": 0.0, "tokens": 0} for e in examples]
    scores = task.compute_metrics(gold, examples)
    assert scores[metric] == pytest.approx(perfect)
    wrong = [{"text": "zzz", "loss_sum": 0.0, "tokens": 0} for _ in examples]
    assert task.compute_metrics(wrong, examples)[metric] < perfect


def test_verbalized_labels_map_back(tmp_path, host, llama):
    data = write_jsonl(tmp_path / "c.jsonl", [{"text": "good film", "label": 1}, {"text": "bad film", "label": 0}])
    _, task = task_for(host, llama, tmp_path, **{"data.source_task": "classification",
                                                 "data.verbalizer": {"0": "negative", "1": "positive"},
                                                 "data.prompt": "Sentiment?\n{text}"})
    examples = task.load("eval", str(data))
    assert examples[0]["messages"][-2]["content"] == "Sentiment?\ngood film"
    assert examples[0]["references"] == ["positive"]
    said = [{"text": "The sentiment is positive, not negative.", "loss_sum": 0, "tokens": 0},
            {"text": "Negative.", "loss_sum": 0, "tokens": 0}]
    assert task.compute_metrics(said, examples)["accuracy"] == 1.0


def test_a_prompt_naming_an_unknown_field_is_an_error(tmp_path, host, llama):
    folder = ROOT / "plugins" / "sft_qa" / "sample_data"
    _, task = task_for(host, llama, tmp_path, **{"data.source_task": "qa", "data.prompt": "{questoin}"})
    with pytest.raises(ConfigError, match=r"names \{questoin\}.*\{question\}"):
        task.load("eval", str(folder / "eval.json"))


def test_ner_entities_as_text_round_trip(host, tmp_path):
    from sft_instruct.mixture import instruction_adapter

    config = make_config(host, "ner")
    adapter = instruction_adapter(host, "ner", host.get_task("ner").factory(config))
    example = {"tokens": ["John", "Smith", "met", "Mary", "in", "Paris", "and", "Paris"],
               "tags": ["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC", "O", "O"]}
    answer = adapter.answer(example)
    assert answer == "PER: John Smith; PER: Mary; LOC: Paris"
    assert adapter.prediction(answer, example)["tags"] == example["tags"]
    assert adapter.prediction("none", example)["tags"] == ["O"] * 8


def test_instruction_adapters_come_from_the_hook_and_from_1_1_members(host):
    """2.0 plugins register adapters through the instruct plugin's hook; a 1.1 task's four members
    are adapted by sft_core.compat; a task with neither is told so in one line."""
    from sft_instruct.mixture import instruction_adapter

    from sft_core.compat import LegacyInstructionAdapter

    task = host.get_task("classification").factory(make_config(host, "classification"))
    assert not hasattr(task, "instruction_answer")  # contract 2.0: not a member of the task
    assert type(instruction_adapter(host, "classification", task)).__module__ == "sft_classification.instruction"

    class Legacy:
        instruction_prompt = "Say {text}"

        def instruction_fields(self, example):
            return {"text": example["text"]}

        def instruction_answer(self, example):
            return example["text"].upper()

        def instruction_prediction(self, text, example):
            return text.lower()

    adapter = instruction_adapter(host, "legacy", Legacy())
    assert isinstance(adapter, LegacyInstructionAdapter) and adapter.prompt == "Say {text}"
    assert adapter.answer({"text": "hi"}) == "HI" and adapter.prediction("HI", {}) == "hi"
    with pytest.raises(ConfigError, match="does not offer its data as instructions"):
        instruction_adapter(host, "plain", object())


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path, host, llama):
    """Windows editors save JSON lines with a UTF-8 byte-order mark; it was refused as invalid JSON."""
    rows = [SHAPES["messages"], SHAPES["messages"]]
    plain = write_jsonl(tmp_path / "plain.jsonl", rows)
    marked = tmp_path / "marked.jsonl"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    _, task = task_for(host, llama, tmp_path)
    assert ([e["messages"] for e in task.load("train", str(marked))]
            == [e["messages"] for e in task.load("train", str(plain))])


def test_empty_answers_are_counted_and_named(tmp_path, host, llama, capsys):
    """An empty answer teaches the model to stop at once: kept, but counted and named, never silent."""
    empty = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
             for q, a in (("Say nothing.", " "), ("Again?", ""))]
    data = write_jsonl(tmp_path / "data.jsonl", [SHAPES["messages"], *empty])
    _, task = task_for(host, llama, tmp_path)
    capsys.readouterr()
    assert len(task.load("train", str(data))) == 3
    assert task.report["empty_answers"] == 2
    assert ("instruct: 2 of 3 training examples have an empty assistant answer (data.jsonl line 2, data.jsonl line 3); "
            "they teach the model to end its turn at once") in capsys.readouterr().err
