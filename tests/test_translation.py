"""The translation task: readers, BLEU against sacrebleu, generation length limits, a tiny model that
learns to copy and reverse, and run/eval/predict through the engine and the CLI."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

from sft_core.errors import DataError
from sft_core.host.manager import PluginHost
from sft_core.testing import Case, TaskConformance, conformance_cases

from conftest import ROOT
from helpers import invoke, make_config

SAMPLE = ROOT / "plugins" / "sft_translation" / "sample_data"
# a tiny Marian: the conformance kit's runs and the copy test stay fast
TINY = {"translation.d_model": 32, "translation.ffn_dim": 64, "translation.attention_heads": 2,
        "translation.encoder_layers": 1, "translation.decoder_layers": 1, "translation.vocab_size": 300}


def read(host, path: Path, split: str = "train", **data):
    from sft_translation.reader import read_examples

    config = make_config(host, "translation", **{f"data.{k}": v for k, v in data.items()})
    return read_examples(path, config.data, split)


def build_tiny_marian(folder: Path, examples: list[dict]) -> str:
    """A tiny random Marian with a BPE tokenizer trained on the examples, saved as a model folder."""
    import torch
    from sft_translation.modeling import scratch_model, train_tokenizer
    from sft_translation.options import TranslationOptions

    options = TranslationOptions(d_model=32, ffn_dim=64, attention_heads=2, encoder_layers=1, decoder_layers=1)
    texts = [t for e in examples for t in (e["source"], e["target"]) if t]
    tokenizer = train_tokenizer(texts, 300, 128)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = scratch_model(options, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@conformance_cases(Case("translation", tiny_model=build_tiny_marian, max_eval_examples=16))
class TestTranslationConformance(TaskConformance):
    pass


# --- reading ---------------------------------------------------------------------------------

def test_reads_jsonl_in_the_hub_layout(host, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"translation": {"en": "A dog.", "de": "Ein Hund."}}\n\n'
                    '{"translation": {"de": "Eine Katze.", "en": "A cat."}}\n', encoding="utf-8")
    assert read(host, path) == [{"source": "A dog.", "target": "Ein Hund.", "line": 1},
                                {"source": "A cat.", "target": "Eine Katze.", "line": 3}]
    reverse = read(host, path, source_lang="de", target_lang="en")
    assert reverse[0] == {"source": "Ein Hund.", "target": "A dog.", "line": 1}


def test_jsonl_without_the_source_language_names_line_and_key(host, tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"translation": {"en": "A dog.", "de": "Ein Hund."}}\n{"translation": {"fr": "Un chat."}}\n')
    with pytest.raises(DataError, match=r"data.jsonl line 2: .*'en' string \(data.source_lang\)"):
        read(host, path)
    path.write_text('{"translation": {"en": "A dog."}}\n')
    with pytest.raises(DataError, match=r"line 1: no 'de' translation"):
        read(host, path)
    assert read(host, path, split="predict") == [{"source": "A dog.", "target": None, "line": 1}]


def test_reads_tsv_and_rejects_a_line_without_a_tab(host, tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("A dog.\tEin Hund.\nA cat.\tEine Katze.\n", encoding="utf-8")
    assert [e["target"] for e in read(host, path)] == ["Ein Hund.", "Eine Katze."]
    path.write_text("A dog.\tEin Hund.\nA cat. Eine Katze.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"pairs.tsv line 2: expected 'source<TAB>target', found 1 tab-separated field$"):
        read(host, path)


def _write_gz(path: Path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def test_reads_aligned_gzip_text_by_either_side_or_prefix(host, tmp_path):
    _write_gz(tmp_path / "train.en.gz", ["A dog.", "A cat."])
    _write_gz(tmp_path / "train.de.gz", ["Ein Hund.", "Eine Katze."])
    expected = [{"source": "A dog.", "target": "Ein Hund.", "line": 1}, {"source": "A cat.", "target": "Eine Katze.", "line": 2}]
    assert read(host, tmp_path / "train.en.gz") == expected
    assert read(host, tmp_path / "train.de.gz") == expected  # the target side names the same pair
    assert read(host, tmp_path / "train") == expected  # the common prefix


def test_aligned_files_of_different_lengths_name_both_files_and_counts(host, tmp_path):
    (tmp_path / "val.en").write_text("A dog.\nA cat.\nA bird.\n", encoding="utf-8")
    (tmp_path / "val.de").write_text("Ein Hund.\nEine Katze.\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        read(host, tmp_path / "val.en", split="eval")
    message = str(info.value)
    assert "val.en has 3 lines" in message and "val.de has 2" in message


def test_missing_target_side_is_an_error_for_training_only(host, tmp_path):
    (tmp_path / "test.en").write_text("A dog.\n\nA cat.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"target side .*test.de does not exist"):
        read(host, tmp_path / "test.en")
    assert [e["source"] for e in read(host, tmp_path / "test.en", split="predict")] == ["A dog.", "A cat."]


def test_training_pairs_with_an_empty_side_are_left_out_and_reported(host, tmp_path, capsys):
    (tmp_path / "t.en").write_text("A dog.\n\nA cat.\nA bird.\n", encoding="utf-8")
    (tmp_path / "t.de").write_text("Ein Hund.\nEin Pferd.\n\nEin Vogel.\n", encoding="utf-8")
    assert [e["line"] for e in read(host, tmp_path / "t.en")] == [1, 4]
    assert "2 training pair(s) with an empty side left out (lines 2, 3)" in capsys.readouterr().err
    assert [e["line"] for e in read(host, tmp_path / "t.en", split="eval")] == [1, 2, 3, 4]  # scored as they are


def test_unknown_layout_says_what_is_expected(host, tmp_path):
    path = tmp_path / "corpus.xml"
    path.write_text("<doc/>")
    with pytest.raises(DataError, match=r"corpus.xml: not a parallel text file; expected FILE.en with FILE.de"):
        read(host, path)


# --- metrics and generation ------------------------------------------------------------------

def test_bleu_equals_sacrebleu_on_the_same_lines():
    import sacrebleu
    from sft_translation.metrics import translation_metrics

    hyps = ["Ein Hund läuft im Park.", "Die Katze schläft.", "Zwei Männer spielen Fußball auf dem Rasen ."]
    refs = ["Ein Hund rennt im Park.", "Die Katze schläft.", "Zwei Männer spielen auf dem Rasen Fußball."]
    metrics = translation_metrics(hyps, refs)
    expected = sacrebleu.corpus_bleu(hyps, [refs])
    assert metrics["bleu"] == expected.score and 0 < metrics["bleu"] < 100
    assert metrics["chrf"] == sacrebleu.corpus_chrf(hyps, [refs]).score
    assert (metrics["gen_len"], metrics["ref_len"]) == (expected.sys_len, expected.ref_len)
    assert metrics["bleu_signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert translation_metrics(refs, refs)["bleu"] == pytest.approx(100.0)


def test_generation_length_limit_follows_the_longest_source(host, tmp_path):
    from sft_translation.task import TranslationTask

    config = make_config(host, "translation", **{"translation.max_length_ratio": 2.0, "translation.max_length_offset": 5})
    task = TranslationTask(config)

    class Model:  # only its config is read
        class config:
            is_encoder_decoder = True
            max_position_embeddings = 60

    assert task.generation_kwargs(Model, 10)["max_new_tokens"] == 25
    assert task.generation_kwargs(Model, 40)["max_new_tokens"] == 59  # capped by the decoder's positions
    assert task.generation_kwargs(Model, 10)["num_beams"] == 4


def test_t5_gets_a_task_prefix_naming_the_languages(host, tmp_path):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration
    from sft_translation.task import TranslationTask

    config = T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2, decoder_start_token_id=0)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    task = TranslationTask(make_config(host, "translation"))

    class Tokenizer:
        cls_token_id = bos_token_id = sep_token_id = None
        eos_token_id, pad_token_id = 1, 0

    task.tokenizer = Tokenizer()
    task.build_model(str(tmp_path))
    assert task.prefix == "translate English to German: "
    assert task.state_dict()["source_prefix"] == task.prefix  # saved with the model, used by eval and predict


# --- learning and the CLI --------------------------------------------------------------------

def _sequences(n: int, seed: int, transform) -> list[str]:
    rng = random.Random(seed)
    words = "red blue green gold black white pink gray".split()
    lines = []
    for _ in range(n):
        seq = [rng.choice(words) for _ in range(rng.randint(2, 5))]
        lines.append(json.dumps({"translation": {"en": " ".join(seq), "de": " ".join(transform(seq))}}))
    return lines


@pytest.mark.parametrize("name, transform", [("copy", lambda s: s), ("reverse", lambda s: s[::-1])])
def test_a_tiny_model_learns_to_copy_and_reverse_exactly(tmp_path, name, transform):
    from sft_core import engine

    (tmp_path / "train.jsonl").write_text("\n".join(_sequences(600, 1, transform)) + "\n")
    (tmp_path / "eval.jsonl").write_text("\n".join(_sequences(30, 2, transform)) + "\n")
    host = PluginHost()
    config = make_config(host, "translation", **{
        **TINY, "model": "scratch", "output_dir": str(tmp_path / "run"), "data.train": str(tmp_path / "train.jsonl"),
        "data.eval": str(tmp_path / "eval.jsonl"), "trainer.epochs": 20, "trainer.lr": 1e-3,
        "trainer.batch_size": 16, "trainer.warmup_ratio": 0.05, "trainer.eval_every": 0, "trainer.save_every": 0,
        "translation.d_model": 64, "translation.ffn_dim": 128, "translation.encoder_layers": 2,
        "translation.decoder_layers": 2, "translation.label_smoothing": 0.0, "translation.dropout": 0.0})
    result = engine.train(config, host)
    assert result["eval"]["bleu"] == pytest.approx(100.0), result["eval"]
    hypotheses = (tmp_path / "run" / "predictions.txt").read_text().splitlines()
    references = [json.loads(line)["translation"]["de"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert hypotheses == references  # exactly, one line per input, in input order


def test_run_eval_and_predict_from_the_cli(tmp_path):
    out = tmp_path / "run"
    overrides = [f"{k}={v}" for k, v in TINY.items()]
    result = invoke("run", "--task", "translation", "--output-dir", out, "trainer.max_steps=4",
                    "data.max_eval_samples=20", *overrides)
    assert result.exit_code == 0, (result.output, result.exception)
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"bleu", "chrf", "bleu_signature", "gen_len", "ref_len"} <= set(metrics)
    assert len((out / "predictions.txt").read_text().splitlines()) == 20
    assert (out / "model" / "tokenizer.json").is_file()  # the tokenizer trained on the data travels with the model

    eval_out = tmp_path / "eval"
    result = invoke("eval", "--model", out / "model", "--data", SAMPLE / "eval.jsonl", "--output-dir", eval_out,
                    "data.max_eval_samples=20")
    assert result.exit_code == 0, (result.output, result.exception)
    again = json.loads((eval_out / "eval_results.json").read_text())
    assert again["bleu"] == metrics["bleu"]
    assert (eval_out / "predictions.txt").read_text() == (out / "predictions.txt").read_text()

    result = invoke("predict", "--model", out / "model", "The dog runs in the park.", "A cat.")
    assert result.exit_code == 0, (result.output, result.exception)
    records = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [r["source"] for r in records] == ["The dog runs in the park.", "A cat."]
    assert all(isinstance(r["translation"], str) for r in records)


def test_an_encoder_checkpoint_warm_starts_an_encoder_decoder(tmp_path, tiny_model):
    from sft_core import engine

    host = PluginHost()
    out = tmp_path / "run"
    config = make_config(host, "translation", **{"model": tiny_model, "output_dir": str(out), "trainer.max_steps": 3,
                                                 "data.max_eval_samples": 8, "trainer.save_every": 0,
                                                 "translation.num_beams": 2})
    result = engine.train(config, host)
    assert result["eval"]["eval_samples"] == 8
    saved = json.loads((out / "model" / "config.json").read_text())
    assert saved["model_type"] == "encoder-decoder" and saved["decoder"]["add_cross_attention"]
    records = list(engine.predict_saved(str(out / "model"), ["The dog runs."], None, host))
    assert [r["source"] for r in records] == ["The dog runs."] and isinstance(records[0]["translation"], str)


def test_built_in_sample_is_parallel_and_disjoint():
    train = [json.loads(line)["translation"] for line in (SAMPLE / "train.jsonl").read_text().splitlines()]
    evaluation = [json.loads(line)["translation"] for line in (SAMPLE / "eval.jsonl").read_text().splitlines()]
    assert len(train) == 1000 and len(evaluation) == 150
    assert all(p["en"] and p["de"] for p in train + evaluation)
    assert not {p["en"] for p in train} & {p["en"] for p in evaluation}


@pytest.mark.parametrize("name, text", [
    ("pairs.jsonl", '{"translation": {"en": "a dog", "de": "ein Hund"}}\n'),
    ("pairs.tsv", "a dog\tein Hund\n"),
])
def test_a_byte_order_mark_is_no_text(host, tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    [example] = read(host, path)
    assert (example["source"], example["target"]) == ("a dog", "ein Hund")
