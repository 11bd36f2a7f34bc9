"""The preference task on tiny random Llamas: the pair formats, the shared-prefix split of
transcripts, each loss against a hand computation, the reference model (adapters off, a frozen copy,
precomputed), learning a constructed preference, exact resume, and bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from sft_core.errors import ConfigError, DataError

from helpers import load_weights, make_config, ok, sft, train_tiny

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the cat dog sat ran on a mat red blue green what is capital of colour answer".split()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def task_for(host, model: str, tmp_path: Path, **values):
    values = {"preference.chat_template": "chatml", **values}
    config = make_config(host, "preference", model=model, output_dir=str(tmp_path), **values)
    task = host.get_task("preference").factory(config)
    return config, task


def features_of(task, examples: list[dict]) -> dict:
    columns = {k: [e[k] for e in examples] for k in examples[0]}
    columns["example_id"] = list(range(len(examples)))
    return task.preprocess(columns)


def constructed_pairs(n: int, seed: int, chosen_word: str = "yes", rejected_word: str = "no") -> list[dict]:
    """Pairs whose answers differ only in their first word: the preference a model must learn."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        question = " ".join(rng.choice(WORDS) for _ in range(5))
        rest = " ".join(rng.choice(WORDS) for _ in range(4))
        pairs.append({"prompt": question, "chosen": f"{chosen_word} {rest}", "rejected": f"{rejected_word} {rest}"})
    return pairs


# --- formats ----------------------------------------------------------------------------------

PROMPT, CHOSEN, REJECTED = "what is the capital of red", "the cat sat on a mat", "no"
FORMATS = {
    "explicit strings": {"prompt": PROMPT, "chosen": CHOSEN, "rejected": REJECTED},
    "explicit messages": {"prompt": [{"role": "user", "content": PROMPT}],
                          "chosen": [{"role": "assistant", "content": CHOSEN}],
                          "rejected": [{"role": "assistant", "content": REJECTED}]},
    "implicit messages": {"chosen": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": CHOSEN}],
                          "rejected": [{"role": "user", "content": PROMPT}, {"role": "assistant", "content": REJECTED}]},
    "transcripts (HH-RLHF)": {"chosen": f"\n\nHuman: {PROMPT}\n\nAssistant: {CHOSEN}",
                              "rejected": f"\n\nHuman: {PROMPT}\n\nAssistant: {REJECTED}"},
}


def test_each_format_gives_the_same_tokens_and_labels_on_the_answers_only(tmp_path, host, tiny_llama):
    _, task = task_for(host, tiny_llama, tmp_path)
    tokenizer = task.load_tokenizer(tiny_llama)
    found = {}
    for name, record in FORMATS.items():
        examples = task.load("train", str(write_jsonl(tmp_path / f"{len(found)}.jsonl", [record])))
        assert [m["content"] for m in examples[0]["prompt"]] == [PROMPT], name
        found[name] = features_of(task, examples)
    first = found["explicit strings"]
    for name, features in found.items():
        for key in ("input_ids", "labels", "rejected_ids", "rejected_labels", "prompt_len"):
            assert features[key] == first[key], (name, key)
    ids, labels = first["input_ids"][0], first["labels"][0]
    answer = [t for t in labels if t != -100]
    # the loss is on the answer and its end-of-turn token, never on the prompt
    assert tokenizer.decode(answer) == CHOSEN + "<|im_end|>"
    assert all(t == -100 for t in labels[:first["prompt_len"][0]])
    assert tokenizer.decode([t for t in first["rejected_labels"][0] if t != -100]) == REJECTED + "<|im_end|>"
    # the rendered prompt is a token prefix of both answers' sequences
    assert ids[:first["prompt_len"][0]] == first["rejected_ids"][0][:first["prompt_len"][0]]


def test_transcripts_split_at_their_shared_beginning(tmp_path, host, tiny_llama):
    from sft_preference.formats import read_pairs

    shared = "\n\nHuman: the cat\n\nAssistant: sat on a mat\n\nHuman: and the dog?"
    rows = [
        {"chosen": shared + "\n\nAssistant: ran", "rejected": shared + "\n\nAssistant: red blue"},
        # they part at an earlier answer: the prompt ends with the last shared user turn
        {"chosen": "\n\nHuman: the cat\n\nAssistant: sat\n\nHuman: yes\n\nAssistant: on a mat",
         "rejected": "\n\nHuman: the cat\n\nAssistant: ran\n\nHuman: no\n\nAssistant: red"},
    ]
    pairs, skipped = read_pairs(write_jsonl(tmp_path / "hh.jsonl", rows), "auto")
    assert not skipped
    assert pairs[0]["prompt"] == [{"role": "user", "content": "the cat"}, {"role": "assistant", "content": "sat on a mat"},
                                  {"role": "user", "content": "and the dog?"}]
    assert pairs[0]["chosen"] == [{"role": "assistant", "content": "ran"}]
    assert pairs[0]["rejected"] == [{"role": "assistant", "content": "red blue"}]
    assert pairs[1]["prompt"] == [{"role": "user", "content": "the cat"}]
    assert [m["content"] for m in pairs[1]["chosen"]] == ["sat", "yes", "on a mat"]
    # a multi-turn answer: the loss covers its assistant turns, not the user turn between them
    _, task = task_for(host, tiny_llama, tmp_path)
    tokenizer = task.load_tokenizer(tiny_llama)
    examples = [dict(p, file="hh.jsonl", line=i + 1) for i, p in enumerate(pairs)]
    features = features_of(task, examples)
    text = tokenizer.decode([t for t in features["labels"][1] if t != -100])
    assert text == "sat<|im_end|>on a mat<|im_end|>"


def test_a_real_hh_rlhf_record_reads(tmp_path, host, tiny_llama):
    record = {"chosen": "\n\nHuman: What are some cuss words in english?\n\nAssistant: Here’s an incomplete list.\n\n"
                        "Human: What's your favorite one?\n\nAssistant: I haven't even thought about it.",
              "rejected": "\n\nHuman: What are some cuss words in english?\n\nAssistant: Here’s an incomplete list.\n\n"
                          "Human: What's your favorite one?\n\nAssistant: Ass."}
    _, task = task_for(host, tiny_llama, tmp_path)
    [example] = task.load("train", str(write_jsonl(tmp_path / "hh.jsonl", [record])))
    assert len(example["prompt"]) == 3 and example["prompt"][-1]["content"] == "What's your favorite one?"
    assert example["rejected"] == [{"role": "assistant", "content": "Ass."}]


def test_bad_pairs_are_errors_naming_the_line_or_counted_skips(tmp_path, host, tiny_llama, capsys):
    _, task = task_for(host, tiny_llama, tmp_path)
    good = FORMATS["explicit strings"]

    def load(rows, **values):
        path = write_jsonl(tmp_path / "bad.jsonl", [good, *rows])
        _, t = task_for(host, tiny_llama, tmp_path, **values) if values else (None, task)
        return t.load("train", str(path))

    errors = [
        ({"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
          "rejected": [{"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}]}, "share no beginning"),
        ({"chosen": "just text", "rejected": "other text"}, "plain string but there is no prompt"),
        ({"prompt": [{"role": "assistant", "content": "hi"}], "chosen": "a", "rejected": "b"}, "must end with a user turn"),
        ({"prompt": "q", "chosen": [{"role": "robot", "content": "a"}], "rejected": "b"}, r"chosen\[0\].role must be one of"),
        ({"prompt": "q", "chosen": 3, "rejected": "b"}, "chosen must be a string or a non-empty list"),
        ({"prompt": "q", "chosen": "a"}, "not a preference pair"),
        ({"chosen": "Robot: hi", "rejected": "Robot: ho"}, "plain string but there is no prompt"),
    ]
    for row, message in errors:
        with pytest.raises(DataError, match=rf"bad.jsonl line 2: .*{message}"):
            load([row])
    (tmp_path / "broken.jsonl").write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(DataError, match="broken.jsonl line 2: invalid JSON"):
        task.load("train", str(tmp_path / "broken.jsonl"))
    # well-formed pairs that teach nothing: skipped and counted (said on stderr), or an error
    same = {"prompt": "q", "chosen": "a b", "rejected": "a b"}
    empty = {"prompt": "q", "chosen": "a", "rejected": "  "}
    capsys.readouterr()
    examples = load([same, empty])
    assert len(examples) == 1 and task.report["skipped_pairs"]["train"] == 2
    err = capsys.readouterr().err
    assert "2 of 3 pairs" in err and "line 2 (identical answers)" in err and "line 3 (an empty rejected answer)" in err
    with pytest.raises(DataError, match="bad.jsonl line 2: identical answers"):
        load([same], **{"data.invalid_pairs": "error"})


def test_config_errors_are_one_line(host, tiny_llama):
    cases = [({"preference.loss": "kto"}, "preference.loss must be one of dpo, ipo, hinge, orpo, simpo"),
             ({"preference.beta": 0}, "preference.beta must be positive"),
             ({"preference.loss": "hinge", "preference.label_smoothing": 0.1}, "label_smoothing applies to the dpo"),
             ({"preference.loss": "simpo", "preference.reference": "copy"}, "uses no reference model"),
             ({"preference.reference": "frozen"}, "preference.reference must be one of"),
             ({"data.format": "pairs"}, "data.format must be one of auto, explicit_prompt, implicit_prompt")]
    for values, message in cases:
        with pytest.raises(ConfigError, match=message):
            make_config(host, "preference", model=tiny_llama, **values)


def test_the_adapters_reference_needs_adapters(tmp_path, tiny_llama):
    train = write_jsonl(tmp_path / "train.jsonl", constructed_pairs(8, 0))
    with pytest.raises(ConfigError, match="reference=adapters switches LoRA adapters off, but peft.method is none"):
        train_tiny(tmp_path / "run", tiny_llama, task="preference", **{
            "data.train": str(train), "data.eval": str(train), "preference.chat_template": "chatml",
            "preference.reference": "adapters", "peft.method": "none", "trainer.max_steps": 1})


# --- the losses -------------------------------------------------------------------------------

def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


# one pair: policy and reference log-probabilities (sums) and answer lengths
C, R, RC, RR, NC, NR = -10.0, -12.0, -11.0, -11.5, 5, 4
HAND = {  # (loss, beta, label smoothing): (expected loss, chosen reward, rejected reward)
    ("dpo", 0.1, 0.0): (-_log_sigmoid(0.1 * 1.5), 0.1 * 1.0, 0.1 * -0.5),
    ("dpo", 0.1, 0.2): (-0.8 * _log_sigmoid(0.15) - 0.2 * _log_sigmoid(-0.15), 0.1, -0.05),
    ("ipo", 0.1, 0.0): ((((-2.0 + 2.2) - (-3.0 + 2.875)) - 5.0) ** 2, 0.1 * 0.2, 0.1 * -0.125),
    ("hinge", 0.1, 0.0): (1 - 0.15, 0.1, -0.05),
    ("simpo", 2.0, 0.0): (-_log_sigmoid(2.0 * (1.0 - 0.25)), 2.0 * -2.0, 2.0 * -3.0),
    ("simpo", 2.0, 0.1): (-0.9 * _log_sigmoid(1.5) - 0.1 * _log_sigmoid(-1.5), -4.0, -6.0),
    ("orpo", 0.1, 0.0): (-0.1 * _log_sigmoid(1.0 - (math.log(1 - math.exp(-2.0)) - math.log(1 - math.exp(-3.0)))),
                         0.1 * -2.0, 0.1 * -3.0),
}


@pytest.mark.parametrize("case", list(HAND), ids=lambda c: f"{c[0]}-beta{c[1]}-ls{c[2]}")
def test_each_loss_equals_a_hand_computation(case):
    from sft_preference.losses import nll, pair_losses

    loss, beta, smoothing = case
    expected, chosen_reward, rejected_reward = HAND[case]
    t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    found = pair_losses(loss, beta, t(C), t(R), t(NC), t(NR), t(RC), t(RR), label_smoothing=smoothing, simpo_gamma=0.5)
    assert found.losses.item() == pytest.approx(expected, rel=1e-9)
    assert found.chosen_rewards.item() == pytest.approx(chosen_reward, rel=1e-9)
    assert found.rejected_rewards.item() == pytest.approx(rejected_reward, rel=1e-9)
    assert nll(t(C), t(NC)).item() == pytest.approx(2.0)  # ORPO adds the chosen answer's mean NLL


def test_without_a_reference_the_rewards_are_the_log_probabilities():
    from sft_preference.losses import pair_losses

    t = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    found = pair_losses("dpo", 0.1, t(C), t(R), t(NC), t(NR))
    assert found.losses is None
    assert found.chosen_rewards.item() == pytest.approx(-1.0) and found.rejected_rewards.item() == pytest.approx(-1.2)


# --- the reference model ----------------------------------------------------------------------

def _batch(task, tmp_path, n=6):
    examples = task.load("train", str(write_jsonl(tmp_path / "pairs.jsonl", constructed_pairs(n, 3))))
    features = features_of(task, examples)
    rows = [{k: features[k][i] for k in features} for i in range(n)]
    return task.collate(rows)


def test_the_adapters_off_reference_equals_a_frozen_copy(tmp_path, host, tiny_llama):
    from sft_core.engine.loading import load_model
    from sft_core.models import adapters

    config, task = task_for(host, tiny_llama, tmp_path)
    tokenizer, model = load_model(task, tiny_llama)
    model = adapters.apply(model, config.peft, tiny_llama)
    with torch.no_grad():  # adapters that change the model (LoRA's B starts at zero)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()  # no LoRA dropout: the same numbers twice
    task.reference = {"kind": "adapters", "model": tiny_llama}
    batch = _batch(task, tmp_path)
    policy = task._logps(model, batch)[0].detach()
    reference = task._reference_logps(model, batch)
    _, frozen = load_model(task, tiny_llama)
    frozen_logps = task._logps(frozen.eval(), batch)[0].detach()
    assert not torch.allclose(policy, frozen_logps, atol=1e-3)  # the adapters matter
    assert torch.allclose(reference, frozen_logps, atol=1e-5)
    # and the adapters are on again afterwards
    assert torch.allclose(task._logps(model, batch)[0].detach(), policy)


def test_the_precomputed_reference_equals_the_live_one(tmp_path, host, tiny_llama):
    from sft_core.engine.batching import build_features
    from sft_core.engine.loading import load_model

    path = write_jsonl(tmp_path / "pairs.jsonl", constructed_pairs(10, 4))
    config, task = task_for(host, tiny_llama, tmp_path, **{"peft.method": "none", "preference.reference": "precompute",
                                                           "trainer.eval_batch_size": 3})
    tokenizer, model = load_model(task, tiny_llama)
    examples = task.load("train", str(path))
    features = build_features(task, config, tokenizer, examples, "train")
    assert task.reference == {"kind": "precompute", "model": tiny_llama}
    assert task.report["train"]["reference"] == "precomputed"
    batch = task.collate([features[i] for i in range(len(features))])
    assert batch["input_ids"].shape[:2] == (10, 2)  # a row per pair: its chosen and rejected sequences
    stored = batch.pop("ref_logps").transpose(0, 1).reshape(-1)
    task.reference = {"kind": "copy", "model": tiny_llama}
    live = task._reference_logps(model, batch)
    assert torch.allclose(stored.float(), live, atol=1e-5), (stored, live)
    assert stored.abs().min() > 1  # real log-probabilities, not a default
    # and the policy's starting point, whose chat tokens were added to the vocabulary in the same way
    assert torch.allclose(stored.float(), task._logps(model.eval(), batch)[0].detach(), atol=1e-5)


@pytest.mark.parametrize("loss", ["dpo", "ipo", "hinge", "orpo", "simpo"])
def test_a_training_step_of_each_loss_gives_the_loss_of_the_evaluation(tmp_path, host, tiny_llama, loss):
    from sft_core.engine.loading import load_model

    config, task = task_for(host, tiny_llama, tmp_path, **{"preference.loss": loss, "peft.method": "none",
                                                           "preference.reference": "auto"})
    tokenizer, model = load_model(task, tiny_llama)
    task._decide_reference()
    assert task.reference["kind"] == ("none" if loss in ("orpo", "simpo") else "precompute")
    task.reference["kind"] = "none" if loss in ("orpo", "simpo") else "copy"
    batch = _batch(task, tmp_path)
    model.train()
    value = task.compute_loss(model, batch)
    value.backward()
    assert value.requires_grad and torch.isfinite(value)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with torch.no_grad():
        out = task.predict_step(model.eval(), batch)
    n = len(out["chosen_logp"])
    predictions = task.postprocess([{k: v[i] for k, v in out.items()} for i in range(n)], {"example_id": list(range(n))},
                                   [None] * n)
    metrics = task.compute_metrics(predictions, [None] * n)
    assert metrics["loss"] == pytest.approx(value.item(), rel=1e-4)  # dropout is 0: train and eval agree


# --- through the command line -----------------------------------------------------------------

def test_a_tiny_model_learns_a_preference_it_never_saw_and_the_result_chats(tmp_path, tiny_llama):
    train = write_jsonl(tmp_path / "train.jsonl", constructed_pairs(64, 1))
    held_out = write_jsonl(tmp_path / "held_out.jsonl", constructed_pairs(16, 2))
    common = ["preference.chat_template=chatml"]
    before = ok(sft("eval", "--task", "preference", "--model", tiny_llama, "--data", held_out,
                    "--output-dir", tmp_path / "before", *common))
    base = json.loads((tmp_path / "before" / "eval_results.json").read_text())
    assert "loss" not in base  # no reference: the model's own log-probabilities
    assert base["reward_accuracy"] == base["logp_accuracy"] < 0.5, before.stdout
    ok(sft("run", "--task", "preference", "--model", tiny_llama, "--train", train, "--eval", held_out,
           "--output-dir", tmp_path / "run", *common, "trainer.lr=1e-3", "trainer.epochs=3", "trainer.eval_every=0"))
    after = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    assert after["reward_accuracy"] == 1.0 and after["reward_margin"] > 0
    assert after["logp_accuracy"] == 1.0  # measured as the base model's was
    info = json.loads((tmp_path / "run" / "model" / "sft_task.json").read_text())
    assert info["task"] == "preference" and info["state"]["reference"]["kind"] == "adapters"
    # sft eval of the saved (merged) model finds its reference again: the same figures
    ok(sft("eval", "--model", tmp_path / "run" / "model", "--data", held_out, "--output-dir", tmp_path / "again"))
    again = json.loads((tmp_path / "again" / "eval_results.json").read_text())
    assert again["reward_accuracy"] == 1.0 and again["loss"] == pytest.approx(after["loss"], rel=1e-4)
    records = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 16 and all(r["prefers_chosen"] for r in records) and records[0]["line"] == 1
    # a preference-tuned model is a causal LM: predict, chat, serve and export as an instruct model does
    import httpx

    from sft_core import Predictor
    from sft_core.host.manager import PluginHost
    from sft_instruct.chat import chat_session
    from test_serve import serving

    model_dir = str(tmp_path / "run" / "model")
    done = ok(sft("predict", "--model", model_dir, "the cat"))
    expected = json.loads(done.stdout.strip().splitlines()[-1])["generation"]
    lines = iter(["the cat", "/exit"])
    conversation = chat_session(model_dir, PluginHost(), read=lambda _: next(lines), write=lambda _: None)
    assert conversation[-1]["role"] == "assistant" and conversation[-1]["content"].strip() == expected
    predictor = Predictor(model_dir)
    with serving(predictor) as (url, _):
        reply = httpx.post(f"{url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "the cat"}]},
                           timeout=120).json()
    assert reply["choices"][0]["message"]["content"].strip() == expected
    done = ok(sft("export", "--model", model_dir, "--format", "gguf", "--output", tmp_path / "gguf"))
    assert "of 16 conversations from" in done.stderr + done.stdout  # verified on the run's evaluation pairs
    assert list((tmp_path / "gguf").glob("*.gguf")) and (tmp_path / "gguf" / "Modelfile").is_file()


def test_the_two_stage_pipeline_instruct_then_preference(tmp_path, tiny_llama):
    instruct_data = write_jsonl(tmp_path / "sft.jsonl", [
        {"prompt": p["prompt"], "completion": p["chosen"]} for p in constructed_pairs(16, 5)])
    pairs = write_jsonl(tmp_path / "pairs.jsonl", constructed_pairs(16, 6))
    ok(sft("run", "--task", "instruct", "--model", tiny_llama, "--train", instruct_data, "--eval", instruct_data,
           "--output-dir", tmp_path / "sft", "instruct.chat_template=chatml", "instruct.max_new_tokens=4",
           "trainer.max_steps=2", "trainer.eval_every=0"))
    # the instruct model scored on pairs: the starting point of preference tuning
    done = ok(sft("eval", "--task", "preference", "--model", tmp_path / "sft" / "model", "--data", pairs,
                  "--output-dir", tmp_path / "start"))
    assert "a model of task 'instruct'; evaluated as the starting point of task 'preference'" in done.stderr
    assert "reward_accuracy" in json.loads((tmp_path / "start" / "eval_results.json").read_text())
    # its saved chat template carries over: no preference.chat_template needed
    ok(sft("run", "--task", "preference", "--model", tmp_path / "sft" / "model", "--train", pairs, "--eval", pairs,
           "--output-dir", tmp_path / "dpo", "trainer.max_steps=2", "trainer.eval_every=0"))
    info = json.loads((tmp_path / "dpo" / "model" / "sft_task.json").read_text())
    assert info["state"]["reference"]["model"] == str(tmp_path / "sft" / "model")


@pytest.mark.parametrize("peft", ["lora", "none"])
def test_resume_continues_exactly(tmp_path, tiny_llama, peft):
    from test_engine import Recorder

    train = write_jsonl(tmp_path / "train.jsonl", constructed_pairs(24, 7))
    values = {"data.train": str(train), "data.eval": str(train), "preference.chat_template": "chatml",
              "peft.method": peft, "trainer.batch_size": 4, "trainer.max_steps": 6, "trainer.save_every": 2,
              "trainer.keep_checkpoints": 5, "trainer.eval_every": 0, "trainer.lr": 1e-3}
    straight = train_tiny(tmp_path / "straight", tiny_llama, task="preference", **values)
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        train_tiny(interrupted, tiny_llama, [Recorder(fail_at_step=3, exc=KeyboardInterrupt)], task="preference",
                   **values)
    resumed = train_tiny(interrupted, tiny_llama, resume=True, task="preference", **values)
    a, b = load_weights(tmp_path / "straight" / "model"), load_weights(interrupted / "model")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["eval"]["reward_accuracy"] == straight["eval"]["reward_accuracy"]
    assert resumed["eval"]["loss"] == straight["eval"]["loss"]


def test_row_ranges_split_one_file_into_training_and_evaluation_pairs(tmp_path, host, tiny_llama):
    path = write_jsonl(tmp_path / "pairs.jsonl", constructed_pairs(10, 8))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    _, task = task_for(host, tiny_llama, tmp_path, **{"data.train": str(path), "data.eval": str(path),
                                                      "data.train_rows": "0-7", "data.eval_rows": "8-"})
    train, evaluation = task.load("train", str(path)), task.load("eval", str(path))
    assert [e["line"] for e in train] == list(range(1, 9)) and [e["line"] for e in evaluation] == [9, 10]
    assert evaluation[0]["chosen"][0]["content"] == rows[8]["chosen"]
    # another file (sft eval --data) is read whole
    other = write_jsonl(tmp_path / "other.jsonl", constructed_pairs(3, 9))
    assert len(task.load("eval", str(other))) == 3
    with pytest.raises(ConfigError, match="share rows"):
        make_config(host, "preference", **{"data.train": str(path), "data.eval": str(path), "data.train_rows": "0-8",
                                           "data.eval_rows": "8-"})
