"""The Trainer comparison scripts: arguments, data checks, the NER helpers and a tiny NER Trainer run.

The real comparisons take a quarter of an hour and more; they are run by hand, not here.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
CONLL = ("-DOCSTART- -X- -X- O\n\n"
         "EU NNP B-NP I-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP I-MISC\ncall NN I-NP O\n\n"
         "Peter NNP B-NP I-PER\nBlackburn NNP I-NP I-PER\n\n"
         "Paris NNP B-NP I-LOC\nLondon NNP I-NP B-LOC\nand CC O O\nBerlin NNP B-NP I-LOC")  # no final newline


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ner_script():
    return load("hf_trainer_ner")


@pytest.mark.parametrize("script", ["compare_trainer.py", "hf_trainer_classification.py", "hf_trainer_ner.py"])
def test_help(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--train-samples" in done.stdout and "--eval-samples" in done.stdout


def test_compare_arguments_and_missing_data(tmp_path):
    compare = load("compare_trainer")
    args = compare.parse_args(["--task", "all", "--epochs", "1"])
    assert args.task == "all" and args.lr is None and args.batch_size is None  # the task defaults apply
    assert args.precision == "fp32" and compare.parse_args(["--precision", "bf16"]).precision == "bf16"
    assert (compare.WORKLOADS["ner"].lr, compare.WORKLOADS["ner"].batch_size) == (3e-4, 16)
    assert (compare.WORKLOADS["classification"].lr, compare.WORKLOADS["classification"].batch_size) == (1e-4, 32)
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trainer.py"), "--task", "ner", "--data-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and f"conll2003/eng.train not found under {tmp_path}" in done.stderr


def test_read_conll_and_iob2(ner_script, tmp_path):
    path = tmp_path / "eng.train"
    path.write_text(CONLL)
    sentences = ner_script.read_conll(path)
    assert [words for words, _ in sentences] == [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"],
                                                ["Paris", "London", "and", "Berlin"]]
    assert [len(s) for s in ner_script.read_conll(path, limit=2)] == [2, 2]
    assert len(ner_script.read_conll(path, limit=2)) == 2
    tags = [ner_script.iob1_to_iob2(t) for _, t in sentences]
    assert tags == [["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"], ["B-LOC", "B-LOC", "O", "B-LOC"]]


def test_first_subword_labels_and_word_tags(ner_script):
    label2id = {"O": 0, "B-PER": 1, "I-PER": 2}
    # [CLS] Pe ##ter Black ##burn runs [SEP]
    labels = ner_script.first_subword_labels([None, 0, 0, 1, 1, 2, None], ["B-PER", "I-PER", "O"], label2id)
    assert labels == [-100, 1, -100, 2, -100, 0, -100]
    predictions = np.array([[0, 1, 0, 1, 1, 0, 0]])
    gold, pred = ner_script.word_tags(predictions, np.array([labels]), ["O", "B-PER", "I-PER"])
    assert gold == [["B-PER", "I-PER", "O"]] and pred == [["B-PER", "B-PER", "O"]]


@pytest.mark.parametrize("padding, bf16", [("dynamic", False), ("max_length", False), ("dynamic", True)])
def test_tiny_ner_trainer_run(ner_script, tiny_model, tmp_path, padding, bf16, monkeypatch):
    from sft_ner.schemes import entity_spans

    original, seen = ner_script.word_tags, []  # seen: the word tags the script scores

    def word_tags(*args):
        seen.append(original(*args))
        return seen[-1]

    monkeypatch.setattr(ner_script, "word_tags", word_tags)
    (tmp_path / "conll2003").mkdir()
    for name in ("eng.train", "eng.testa"):
        (tmp_path / "conll2003" / name).write_text(CONLL)
    args = ner_script.parse_args(["--model", tiny_model, "--data-dir", str(tmp_path), "--epochs", "1",
                                  "--batch-size", "2", "--max-length", "16", "--padding", padding,
                                  *(["--bf16"] if bf16 else [])])
    result = ner_script.main(args, str(tmp_path / "out"))
    assert result["train_samples"] == 3 and result["eval_samples"] == 3
    assert result["train_samples_per_second"] > 0 and result["eval_samples_per_second"] > 0
    ((gold, pred),) = seen
    # every word, with its tag (in any order: length grouping may reorder the evaluation)
    assert sorted(gold) == sorted([["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"], ["B-LOC", "B-LOC", "O", "B-LOC"]])
    g = {(i, *span) for i, tags in enumerate(gold) for span in entity_spans(tags)}
    p = {(i, *span) for i, tags in enumerate(pred) for span in entity_spans(tags)}
    assert result["f1"] == pytest.approx(2 * len(g & p) / (len(g) + len(p)))  # strict entity-level F1


def test_tiny_ner_trainer_run_with_lora_on_a_decoder(ner_script, tmp_path):
    from sft_core.testing import tiny_decoder

    model = tiny_decoder(tmp_path / "llama", [line.split(" ")[0] for line in CONLL.splitlines() if line] * 3)
    (tmp_path / "conll2003").mkdir()
    for name in ("eng.train", "eng.testa"):
        (tmp_path / "conll2003" / name).write_text(CONLL)
    args = ner_script.parse_args(["--model", model, "--data-dir", str(tmp_path), "--epochs", "1", "--batch-size", "2",
                                  "--max-length", "16", "--padding", "dynamic", "--lora", "--lora-r", "4"])
    result = ner_script.main(args, str(tmp_path / "out"))
    assert result["train_samples"] == 3 and result["eval_samples"] == 3

    from transformers import AutoModelForTokenClassification, AutoTokenizer

    from trainer_common import prepare_model

    adapted = prepare_model(AutoModelForTokenClassification.from_pretrained(model, num_labels=3),
                            AutoTokenizer.from_pretrained(model), args, "TOKEN_CLS")
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert any("lora_A" in n for n in trainable) and any(".score." in n for n in trainable)
    assert all("lora_A" in n or "lora_B" in n or ".score." in n for n in trainable), trainable


def test_compare_trl_help():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trl.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--runs" in done.stdout and "--precision" in done.stdout


def test_compare_trl_on_a_tiny_decoder(tmp_path):
    """The sft side always; with TRL installed, TRL on sft's batches starts from the same loss."""
    from sft_core.testing import tiny_decoder

    from test_instruct import EOS_TEMPLATE  # answers end with EOS: TRL appends nothing, both see the same tokens

    data = tmp_path / "data"
    (data / "glue" / "SST-2").mkdir(parents=True)
    rows = [f"{'a fine warm film' if i % 2 else 'a dull cold film'} number {i}\t{i % 2}" for i in range(24)]
    (data / "glue" / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    model = tiny_decoder(tmp_path / "model", [r.split("\t")[0] for r in rows] + ["positive negative sentiment"],
                         family="llama", pad="eos")
    template = tmp_path / "template.jinja"
    template.write_text(EOS_TEMPLATE)
    runs = ["sft", "sft-packed"] + (["trl"] if importlib.util.find_spec("trl") else [])
    output = tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trl.py"), "--model", model, "--chat-template",
                           str(template), "--data-dir", str(data), "--source", "sst2", "--examples", "16",
                           "--batch-size", "4", "--max-length", "256", "--threads", "1", "--runs", *runs,
                           "--output", str(output)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    results = json.loads(output.read_text())["results"]
    assert not any("error" in r for r in results.values()), results
    assert results["sft"]["steps"] == 4 and results["sft"]["tokens"] > 0
    assert results["sft-packed"]["packed_sequences"] < 16
    assert results["sft-packed"]["tokens"] == results["sft"]["tokens"]
    if "trl" in results:
        assert results["trl"]["tokens"] == results["sft"]["tokens"]
        assert abs(results["trl"]["losses"][0] - results["sft"]["losses"][0]) < 1e-4


def test_memory_benchmark_on_a_tiny_decoder(tmp_path):
    """benchmarks/memory.py's three parts on sft's configurations: the memory options change no loss,
    the breakdown accounts for the step, the length search stops at its cap or the budget."""
    from sft_core.testing import tiny_decoder

    from test_instruct import EOS_TEMPLATE

    data = tmp_path / "data"
    (data / "glue" / "SST-2").mkdir(parents=True)
    rows = [f"{'a fine warm film' if i % 2 else 'a dull cold film'} number {i}\t{i % 2}" for i in range(16)]
    (data / "glue" / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    for label in ("pos", "neg"):
        (data / "imdb" / "aclImdb" / "train" / label).mkdir(parents=True)
        for i in range(3):
            (data / "imdb" / "aclImdb" / "train" / label / f"{i}_7.txt").write_text(
                " ".join(f"a {label} film review sentence number {j}.<br />" for j in range(60)))
    model = tiny_decoder(tmp_path / "model", [r.split("\t")[0] for r in rows] + ["film review sentence number"],
                         family="llama", pad="eos")
    template = tmp_path / "template.jinja"
    template.write_text(EOS_TEMPLATE)
    output = tmp_path / "memory.json"
    common = ["--model", model, "--chat-template", str(template), "--data-dir", str(data), "--source", "sst2",
              "--examples", "8", "--batch-size", "4", "--max-length", "128", "--threads", "1",
              "--configs", "sft", "sft-unchunked", "sft-ckpt", "--start", "64", "--cap", "128"]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "memory.py"), *common, "--budget-mb", "100000",
                           "--output", str(output)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    results = json.loads(output.read_text())
    configs = results["configs"]
    assert set(configs) == {"sft", "sft-unchunked", "sft-ckpt"} and not any("error" in r for r in configs.values())
    for name in ("sft-unchunked", "sft-ckpt"):  # the same math: the same losses
        assert configs[name]["losses"] == pytest.approx(configs["sft"]["losses"], abs=1e-4), name
    assert all(r["peak_rss_mb"] > 100 and r["tokens_per_second"] > 0 for r in configs.values())
    breakdown = results["breakdown"]
    assert set(breakdown) == {"sft", "sft-unchunked"}
    for r in breakdown.values():
        assert r["step_peak_mb"] == pytest.approx(sum(r["step_peak_by_region_mb"].values()), rel=1e-6)
        assert r["step_peak_by_region_mb"]["activations"] > 0 and r["weights_mb"] > r["trainable_mb"] > 0
    assert breakdown["sft"]["loss"] == pytest.approx(breakdown["sft-unchunked"]["loss"], abs=1e-5)
    longest = results["longest"]
    assert longest["sft-ckpt"]["longest"] == 128 and longest["sft-ckpt"]["capped"]
    assert sorted(longest["sft-ckpt"]["tried"], key=int) == ["64", "128"]
    assert "longest sequence trained" in done.stdout and "sft-unchunked" in done.stdout

    # a budget nothing fits: the first length tried is over, and the report says so
    done = subprocess.run([sys.executable, str(BENCHMARKS / "memory.py"), *common, "--parts", "longest",
                           "--budget-mb", "1", "--configs", "sft-ckpt", "--output", str(output)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(output.read_text())["longest"]["sft-ckpt"]["longest"] == 0
    assert "(64 does not)" in done.stdout


def test_serve_load_measures_a_served_model_and_the_baseline(tmp_path):
    """benchmarks/serve_load.py's load levels against `sft serve` and against the hand-written
    baseline server, both on one tiny classifier; every request is answered and counted."""
    pytest.importorskip("aiohttp")
    pytest.importorskip("fastapi")
    import asyncio

    from sft_core.engine.predictor import Predictor
    from sft_core.testing import Case, build_tiny_model, run_engine

    from test_serve import CLASSIFICATION, serving

    case = Case("classification")
    run_engine(case, build_tiny_model(case, tmp_path / "tiny"), tmp_path / "run")
    model = tmp_path / "run" / "model"
    load_test = load("serve_load")
    baseline = load("baseline_server")
    with serving(Predictor(str(model)), max_wait_ms=20) as (url, _):
        ours = asyncio.run(load_test.level(url, CLASSIFICATION, clients=8, requests=40, seconds=60))
        metrics = __import__("httpx").get(f"{url}/metrics").text
    with serving(baseline.build_app(str(model), "text-classification")) as (url, _):
        theirs = asyncio.run(load_test.level(url, CLASSIFICATION, clients=8, requests=40, seconds=60))
    for row in (ours, theirs):
        assert row["requests"] == 40 and row["failed"] == 0 and row["rps"] > 0
        assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert 'sft_requests_total{route="/predict",status="200"} 40.0' in metrics  # the load reached sft serve


def test_small_data_builds_its_sets_from_the_benchmark_files(tmp_path):
    """benchmarks/small_data.py: its conversations are what the instruct reader accepts, the
    SQuAD training and evaluation questions come from different articles, and --help runs."""
    import json

    from sft_instruct.formats import read_conversations

    def read_examples(path):
        return read_conversations(path, "auto", need_answer=True)

    script = load("small_data")
    squad = {"data": [{"title": f"a{i}", "paragraphs": [
        {"context": f"Article {i} paragraph {j} names Lima.", "qas": [
            {"id": f"{i}-{j}", "question": f"Which city, {i} {j}?", "answers": [{"text": "Lima", "answer_start": 26}]}]}
        for j in range(10)]} for i in range(50)]}
    (tmp_path / "squad").mkdir()
    (tmp_path / "squad" / "dev-v1.1.json").write_text(json.dumps(squad))
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        rows = "".join(f"a {'fine' if i % 2 else 'dull'} film {i} \t{i % 2}\n" for i in range(300))
        (tmp_path / "glue" / "SST-2" / name).write_text("sentence\tlabel\n" + rows)
    train, evaluation = script.squad_conversations(tmp_path, tmp_path)
    train_examples, eval_examples = read_examples(str(train)), read_examples(str(evaluation))
    assert len(train_examples) == 40 and len(eval_examples) == 50
    assert "Article 0 paragraph 0" in train_examples[0]["messages"][0]["content"]
    assert "Article 40 paragraph 0" in eval_examples[0]["messages"][0]["content"]  # held-out articles
    assert train_examples[0]["messages"][-1] == {"role": "assistant", "content": "Lima"}
    train, evaluation = script.sst2_instructions(tmp_path, tmp_path)
    answers = [e["messages"][-1]["content"] for e in read_examples(str(train))]
    assert len(answers) == 40 and answers[:2] == ["negative", "positive"]
    assert len(read_examples(str(evaluation))) == 200
    done = subprocess.run([sys.executable, str(BENCHMARKS / "small_data.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "squad40" in done.stdout, done.stderr


def test_compare_trl_dpo_on_a_tiny_decoder(tmp_path):
    """The sft side always (adapters switched off and the precomputed reference give the same losses at
    every step); with TRL installed, DPOTrainer on sft's batches gives the same loss and reward accuracy."""
    import json

    from sft_core.testing import tiny_decoder

    from test_instruct import EOS_TEMPLATE

    words = "the cat dog sat ran on a mat red blue green".split()
    pairs = [{"chosen": f"\n\nHuman: {words[i % 11]} {words[(i * 3) % 11]}?\n\nAssistant: yes {words[(i * 5) % 11]}",
              "rejected": f"\n\nHuman: {words[i % 11]} {words[(i * 3) % 11]}?\n\nAssistant: no"} for i in range(14)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    model = tiny_decoder(tmp_path / "model", [" ".join(words)] * 20 + ["Human Assistant yes no ?"], family="llama",
                         pad="eos")
    template = tmp_path / "template.jinja"
    template.write_text(EOS_TEMPLATE)
    runs = ["sft", "sft-precompute"] + (["trl"] if importlib.util.find_spec("trl") else [])
    output = tmp_path / "out.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "compare_trl_dpo.py"), "--model", model, "--chat-template",
                           str(template), "--data", str(data), "--pairs", "12", "--batch-size", "2", "--max-length",
                           "64", "--lr", "1e-2", "--threads", "1", "--runs", *runs, "--output", str(output)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(output.read_text())["results"]
    assert not any("error" in r for r in results.values()), results
    sft, precompute = results["sft"], results["sft-precompute"]
    assert sft["steps"] == 6 and sft["pairs"] == 12 and sft["tokens"] > 0 and len(sft["losses"]) == 5
    assert sft["losses"][0] == pytest.approx(0.693147, abs=1e-5)  # the policy starts as its reference
    assert sft["losses"][4] != sft["losses"][0] and sft["reference_seconds"] == 0
    assert precompute["reference_seconds"] > 0
    for a, b in zip(sft["losses"], precompute["losses"]):
        assert a == pytest.approx(b, abs=1e-5)
    if "trl" in results:
        for key in ("losses", "accuracies"):
            for a, b in zip(sft[key], results["trl"][key]):
                assert a == pytest.approx(b, abs=1e-4), key


def test_serve_generate_on_a_tiny_decoder(tmp_path):
    """benchmarks/serve_generate.py against `sft serve` with continuous and with static batching, on a
    tiny instruct model: every level's requests are answered, streamed and counted."""
    pytest.importorskip("aiohttp")
    pytest.importorskip("fastapi")
    import json

    from sft_core.testing import build_tiny_model, run_engine

    from test_serve import CASES

    case = CASES["instruct"]
    run_engine(case, build_tiny_model(case, tmp_path / "tiny"), tmp_path / "run")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is the capital of France?\nName a colour.\n\nWho wrote the play?\n")
    output = tmp_path / "out" / "serve.json"
    model = tmp_path / "run" / "model"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "serve_generate.py"), "--model", str(model),
                           "--systems", "sft-continuous,sft-static", "--clients", "1,2", "--max-tokens", "8",
                           "--requests-per-client", "1", "--prompts", str(prompts), "--output", str(output)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(output.read_text())
    assert results["prompts"]["count"] == 3 and results["machine"]["cores"] >= 1
    assert list(results["systems"]) == ["sft-continuous", "sft-static"]
    for name, system in results["systems"].items():
        assert "error" not in system, (name, system)
        assert ("--generation" in system["command"]) == (name == "sft-static")
        assert [level["clients"] for level in system["levels"]] == [1, 2]
        for level in system["levels"]:
            assert level["requests"] == level["planned"] == 4 and level["completed"] == 4, (name, level)
            assert level["failures"] == {} and level["completion_tokens"] > 0 and level["tokens_per_second"] > 0
            assert 0 < level["ttft_p50_ms"] <= level["ttft_p99_ms"] and level["peak_rss_mb"] > 0
        assert system["peak_rss_mb"] >= max(level["peak_rss_mb"] for level in system["levels"])
    assert "| sft-static | 2 | 4 / 4 |" in done.stdout  # the Markdown table
