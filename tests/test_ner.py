"""The NER task: reading CoNLL/JSONL, tagging schemes, word alignment and windows, seqeval scores,
and a short run through the engine with eval and predict on the saved model."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from sft_core.errors import DataError
from sft_core.testing import tiny_bert

from conftest import ROOT
from helpers import constructed_texts, invoke, make_config, train_tiny, write_name_ner

NER_SAMPLE = ROOT / "plugins" / "sft_ner" / "sample_data"


def read(host, tmp_path, text: str, name: str = "data.conll", split: str = "train", **data):
    from sft_ner.reader import read_examples

    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    config = make_config(host, "ner", **{f"data.{k}": v for k, v in data.items()})
    return read_examples(path, config.data, split)


# --- reading ---------------------------------------------------------------------------------

# IOB1 as in the original CoNLL-2003 files: I- opens entities, B- only between two of a type;
# -DOCSTART- at the start, in the middle and at the end, and no final newline
CONLL_IOB1 = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
lamb NN I-NP O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- O O
In IN I-PP O
Paris NNP I-NP I-LOC
Lyon NNP I-NP B-LOC
and CC O O
Rome NNP I-NP I-LOC
Milan NNP I-NP B-LOC
Inter NNP I-NP I-ORG

-DOCSTART- -X- O O"""


def test_conll_iob1_is_read_and_converted_to_iob2(host, tmp_path, capsys):
    examples = read(host, tmp_path, CONLL_IOB1)
    assert [e["tokens"] for e in examples] == [
        ["EU", "rejects", "German", "lamb"], ["Peter", "Blackburn"],
        ["In", "Paris", "Lyon", "and", "Rome", "Milan", "Inter"]]
    assert [e["tags"] for e in examples] == [
        ["B-ORG", "O", "B-MISC", "O"], ["B-PER", "I-PER"],
        ["O", "B-LOC", "B-LOC", "O", "B-LOC", "B-LOC", "B-ORG"]]
    assert [e["line"] for e in examples] == [3, 8, 11]
    assert "tags read as IOB1, converted to IOB2" in capsys.readouterr().err
    # forcing IOB1 gives the same; IOB2 is the identity on IOB2 data
    assert [e["tags"] for e in read(host, tmp_path, CONLL_IOB1, tag_scheme="iob1")] == [e["tags"] for e in examples]
    iob2 = "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(e["tokens"], e["tags"])) for e in examples)
    assert [e["tags"] for e in read(host, tmp_path, iob2, tag_scheme="iob2")] == [e["tags"] for e in examples]
    assert [e["tags"] for e in read(host, tmp_path, iob2)] == [e["tags"] for e in examples]


def test_forcing_iob2_on_iob1_data_names_the_line(host, tmp_path):
    with pytest.raises(DataError, match=r"data.conll line 3: not valid IOB2: I-ORG does not continue an entity.*iob1"):
        read(host, tmp_path, CONLL_IOB1, tag_scheme="iob2")


def test_bioes_is_converted(host, tmp_path):
    text = "Angela B-PER\nMerkel E-PER\nin O\nParis S-LOC\nand O\nNew B-LOC\nYork I-LOC\nCity E-LOC\n"
    assert read(host, tmp_path, text)[0]["tags"] == ["B-PER", "I-PER", "O", "B-LOC", "O", "B-LOC", "I-LOC", "I-LOC"]
    with pytest.raises(DataError, match=r"line 1: not valid BIOES: B-PER is not followed by I-PER or E-PER"):
        read(host, tmp_path, "Angela B-PER\nsaid O\n", tag_scheme="bioes")
    with pytest.raises(DataError, match=r"line 2: not valid IOB2: E-PER is not a tag of IOB2"):
        read(host, tmp_path, "Angela B-PER\nMerkel E-PER\n", tag_scheme="iob2")


def test_columns_are_configurable(host, tmp_path):
    text = "1\tEU\tNNP\tB-ORG\tx\n2\tsaid\tVBD\tO\tx\r\n"
    examples = read(host, tmp_path, text, token_column=1, tag_column=3)
    assert examples[0]["tokens"] == ["EU", "said"] and examples[0]["tags"] == ["B-ORG", "O"]


@pytest.mark.parametrize("text, message", [
    ("EU NNP B-ORG\nsaid VBD\n", "data.conll line 2: 2 columns, expected 3 (as on line 1)"),
    ("EU\tB-ORG\n\tO\n", "data.conll line 2: empty token"),
    ("EU NNP\nsaid VBD\n", "data.conll line 1: tag 'NNP' is neither O nor B-/I-/E-/S-TYPE (is data.tag_column=-1"),
    ("EU\nsaid\n", "data.conll line 1: 1 column; expected a token and a tag column"),
    ("\n\n-DOCSTART- O\n", "data.conll: the file holds no sentences"),
])
def test_malformed_conll_names_file_and_line(host, tmp_path, text, message):
    with pytest.raises(DataError) as error:
        read(host, tmp_path, text)
    assert message in str(error.value)


def test_jsonl_tags_and_numbered_ner_tags(host, tmp_path):
    text = ('{"tokens": ["Angela", "Merkel", "visited", "Paris"], "tags": ["B-PER", "I-PER", "O", "B-LOC"]}\n'
            '\n{"tokens": ["EU", "rejects"], "ner_tags": [3, 0]}')
    names = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
    examples = read(host, tmp_path, text, name="data.jsonl", label_names=names)
    assert [e["tags"] for e in examples] == [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    assert [e["line"] for e in examples] == [1, 3]
    with pytest.raises(DataError, match=r"data.jsonl line 3: tags are numbers; name them with data.label_names"):
        read(host, tmp_path, text, name="data.jsonl")
    with pytest.raises(DataError, match=r"data.jsonl line 1: 2 tokens but 1 tags"):
        read(host, tmp_path, '{"tokens": ["a", "b"], "tags": ["O"]}\n', name="data.jsonl")
    # prediction inputs: pre-tokenized words or raw text
    inputs = read(host, tmp_path, '{"tokens": ["Paris", "again"]}\n{"text": "Angela Merkel visited Paris."}\n',
                  name="in.jsonl", split="predict")
    assert inputs[0]["tokens"] == ["Paris", "again"] and inputs[0]["text"] is None and inputs[0]["tags"] is None
    assert inputs[1]["tokens"] == ["Angela", "Merkel", "visited", "Paris", "."]
    assert inputs[1]["offsets"][3] == [22, 27]


def test_iob1_to_iob2_is_the_identity_on_iob2_and_detection():
    from sft_ner.schemes import detect_scheme, entity_spans, first_violation, to_iob2

    rng = random.Random(0)
    for _ in range(300):
        tags, previous = [], "O"
        for _ in range(rng.randint(1, 12)):  # random valid IOB2
            options = ["O", "B-PER", "B-LOC"] + ([f"I-{previous[2:]}"] if previous != "O" else [])
            previous = rng.choice(options)
            tags.append(previous)
        assert first_violation(tags, "iob2") is None
        assert to_iob2(tags, "iob1") == tags
        assert detect_scheme([tags]) == "iob2"
        # IOB1 spelling of the same entities: I- opens unless a B- is needed to separate two of a type
        iob1 = [t if t == "O" or (t[0] == "B" and i and tags[i - 1][2:] == t[2:]) else "I" + t[1:]
                for i, t in enumerate(tags)]
        assert to_iob2(iob1, "iob1") == tags
        assert entity_spans(to_iob2(iob1, "iob1")) == entity_spans(tags)
    assert detect_scheme([["O", "I-PER"]]) == "iob1" and detect_scheme([["S-PER"]]) == "bioes"


# --- windows and alignment -------------------------------------------------------------------

def test_plan_windows_covers_every_word_within_budget():
    from sft_ner.alignment import plan_windows

    rng = random.Random(1)
    for _ in range(500):
        counts = [rng.randint(1, 6) for _ in range(rng.randint(1, 40))]
        budget, stride = rng.randint(6, 20), rng.randint(0, 8)
        windows = plan_windows(counts, budget, stride)
        assert windows[0][0] == 0 and windows[-1][1] == len(counts)
        for (s, e), (s2, e2) in zip(windows, windows[1:]):
            assert s < s2 <= e < e2  # progress, no gap
            assert sum(counts[s2:e]) <= stride  # the overlap stays within the stride
        for s, e in windows:
            assert sum(counts[s:e]) <= budget
    assert plan_windows([2, 30, 2], budget=10, stride=4) == [(0, 1), (1, 2), (2, 3)]  # an over-long word alone


WORDS = ["Angela", "Merkel", "visited", "Paris", "and", "met", "Emmanuel", "Macron", "at", "the", "Elysee"]
LONG_WORDS = ["Supercalifragilistic", "Zyxwvutsrqponmlkjih"]  # letters of their own: split near char by char


def build_tokenizer(folder: Path):
    """A WordPiece tokenizer with a tiny vocabulary: most words split into many sub-tokens."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=60, special_tokens=special, show_progress=False)
    tok.train_from_iterator([" ".join(WORDS + LONG_WORDS)] * 3, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(folder)
    return str(folder)


def random_sentences(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        tokens, tags = [], []
        for _ in range(rng.choice([1, 3, 6, 25, 60])):
            if rng.random() < 0.3:
                kind = rng.choice(["PER", "LOC", "ORG"])
                for k in range(rng.randint(1, 3)):
                    tokens.append(rng.choice(WORDS + LONG_WORDS))
                    tags.append(("B-" if k == 0 else "I-") + kind)
            else:
                tokens.append(rng.choice(WORDS + [",", ".", "\u200b"]))  # a zero-width space: no sub-token
                tags.append("O")
        examples.append({"tokens": tokens, "tags": tags, "text": None, "offsets": None, "line": i + 1})
    return examples


def make_task(host, tokenizer_dir: str, **values):
    spec = host.get_task("ner")
    config = make_config(host, "ner", **values)
    task = spec.factory(config)
    task.load_state_dict({"labels": ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]})
    tokenizer = task.load_tokenizer(tokenizer_dir)
    return task, config, tokenizer


def oracle_outputs(task, features, examples, constrained=False) -> list[dict]:
    """What a perfect model's predict_step would return: every sub-token scores its word's gold tag."""
    index = {label: i for i, label in enumerate(task.labels)}
    outputs = []
    for example_id, positions in zip(features["example_id"], features["first_of_word"]):
        gold = examples[example_id]["tags"]
        pred = [index[gold[w]] if w >= 0 else 0 for w in positions]  # other positions are never read
        if constrained:
            outputs.append({"log_probs": [[0.0 if k == p else -5.0 for k in range(len(task.labels))] for p in pred]})
        else:
            outputs.append({"pred": pred, "score": [0.9] * len(pred)})
    return outputs


@pytest.mark.parametrize("label_all_tokens, constrained", [(False, False), (True, True)])
def test_alignment_round_trip(host, tmp_path, label_all_tokens, constrained):
    from sft_core.engine.batching import build_features
    from sft_ner.alignment import IGNORE

    tokenizer_dir = build_tokenizer(tmp_path / "tok")
    task, config, tokenizer = make_task(host, tokenizer_dir, **{
        "trainer.max_length": 16, "ner.stride": 5, "ner.label_all_tokens": label_all_tokens,
        "ner.constrained_decoding": constrained})
    examples = random_sentences(40)
    features = build_features(task, config, tokenizer, examples, "eval", use_cache=False)

    pieces = [len(tokenizer.tokenize(w)) for e in examples for w in e["tokens"]]
    assert max(pieces) > 16, "some words must split into more sub-tokens than a window holds"
    lengths = [len(ids) for ids in features["input_ids"]]
    assert max(lengths) == 16
    per_example = [list(features["example_id"]).count(i) for i in range(len(examples))]
    assert max(per_example) >= 3 and min(per_example) == 1  # long sentences were windowed, short ones not

    # the training labels: the gold tag on each word's first sub-token, continuations per option
    index = {label: i for i, label in enumerate(task.labels)}
    for example_id, positions, labels in zip(features["example_id"], features["first_of_word"], features["labels"]):
        gold, current = examples[example_id]["tags"], None
        for p, (w, label) in enumerate(zip(positions, labels)):
            if w >= 0:
                current = w
                assert label == index[gold[w]]
            elif p in (0, len(positions) - 1) or current is None:
                assert label == IGNORE  # special tokens
            elif label_all_tokens:
                tag = gold[current]
                assert label == index["I" + tag[1:] if tag.startswith("B-") else tag]
            else:
                assert label == IGNORE

    predictions = task.postprocess(oracle_outputs(task, features, examples, constrained), features, examples)
    assert [p["tags"] for p in predictions] == [e["tags"] for e in examples]
    metrics = task.compute_metrics(predictions, examples)
    assert metrics["f1"] == 1.0 and metrics["precision"] == 1.0 and metrics["recall"] == 1.0
    assert metrics["accuracy"] == 1.0
    assert {"f1_PER", "f1_LOC", "f1_ORG"} <= metrics.keys()


def test_overlapping_windows_read_each_word_where_it_has_most_context():
    from sft_ner.alignment import best_positions

    # one sentence of 6 words in two windows: [CLS] w0 w1 w2 w3 [SEP] and [CLS] w2 w3 w4 w5 [SEP]
    first_of_word = [[-1, 0, 1, 2, 3, -1], [-1, 2, 3, 4, 5, -1]]
    chosen = best_positions(first_of_word, [0, 0], [6])[0]
    # w2 sits 3 from an edge in window 0 and 1 in window 1; w3 the other way round
    assert chosen == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (1, 4)]


def test_seqeval_equality_on_random_predictions():
    from seqeval.metrics import accuracy_score, classification_report, f1_score
    from seqeval.scheme import IOB2
    from sft_ner.metrics import ner_metrics
    from sft_ner.schemes import entity_spans

    rng = random.Random(2)
    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    gold = [["O" if rng.random() < 0.6 else rng.choice(labels) for _ in range(rng.randint(1, 15))] for _ in range(200)]
    gold = [[t if not t.startswith("I-") or i and s[i - 1][2:] == t[2:] else "B" + t[1:] for i, t in enumerate(s)]
            for s in gold]  # valid IOB2
    pred = [[t if rng.random() < 0.7 else rng.choice(labels) for t in s] for s in gold]  # with stray I- tags
    metrics = ner_metrics(gold, pred)
    report = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True)
    assert metrics["precision"] == report["micro avg"]["precision"]
    assert metrics["recall"] == report["micro avg"]["recall"]
    assert metrics["f1"] == report["micro avg"]["f1-score"] == f1_score(gold, pred, mode="strict", scheme=IOB2)
    assert metrics["accuracy"] == accuracy_score(gold, pred)
    for kind in ("PER", "LOC", "MISC"):
        assert metrics[f"f1_{kind}"] == report[kind]["f1-score"]
    # our span reader (used for `sft predict`) counts the entities seqeval's strict mode counts
    g = {(i, *s) for i, tags in enumerate(gold) for s in entity_spans(tags)}
    p = {(i, *s) for i, tags in enumerate(pred) for s in entity_spans(tags)}
    correct = len(g & p)
    assert metrics["precision"] == pytest.approx(correct / len(p))
    assert metrics["recall"] == pytest.approx(correct / len(g))
    assert 0.3 < metrics["f1"] < 0.95  # a real mix of hits and misses


def test_viterbi_keeps_transitions_valid():
    import numpy as np

    from sft_ner.decoding import IOB2Viterbi

    labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    # argmax per word would be O I-PER I-LOC: both I- tags are invalid there
    log_probs = np.log(np.array([[0.9, 0.05, 0.01, 0.03, 0.01],
                                 [0.3, 0.25, 0.4, 0.03, 0.02],
                                 [0.1, 0.05, 0.3, 0.15, 0.4]]))
    path = [labels[i] for i in IOB2Viterbi(labels).decode(log_probs)]
    assert path == ["O", "B-PER", "I-PER"]


# --- through the engine ----------------------------------------------------------------------

def test_importing_the_plugin_imports_no_torch():
    code = "import sys, sft_ner; print(sorted(m for m in ('torch', 'transformers', 'seqeval') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def ner_run(tiny_model, tmp_path_factory):
    """A short run on the built-in sample; max_length 16 forces windows over the longer sentences."""
    out = tmp_path_factory.mktemp("ner-run")
    result = train_tiny(out, tiny_model, task="ner", **{"trainer.max_steps": 20, "trainer.max_length": 16,
                                                       "trainer.lr": 5e-3, "trainer.save_every": 0})
    return out, result


def test_run_writes_seqeval_metrics_and_predictions(ner_run):
    from seqeval.metrics import accuracy_score, classification_report
    from seqeval.scheme import IOB2

    out, result = ner_run
    metrics = json.loads((out / "eval_results.json").read_text())
    assert {"precision", "recall", "f1", "accuracy"} <= metrics.keys()
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    gold = [line.split() for line in (NER_SAMPLE / "eval.conll").read_text().split("\n\n")[1:] if line.strip()]
    assert len(records) == len(gold) == 40
    for record, sentence in zip(records, gold):
        assert record["tokens"] == sentence[0::2] and record["gold_tags"] == sentence[1::2]
        assert len(record["pred_tags"]) == len(record["tokens"])  # every word, also beyond max_length
    golds, preds = [r["gold_tags"] for r in records], [r["pred_tags"] for r in records]
    report = classification_report(golds, preds, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    assert metrics["f1"] == pytest.approx(report["micro avg"]["f1-score"])
    assert metrics["accuracy"] == pytest.approx(accuracy_score(golds, preds))
    info = json.loads((out / "model" / "sft_task.json").read_text())
    assert info["task"] == "ner" and info["state"]["labels"][:3] == ["O", "B-LOC", "I-LOC"]


def test_a_tiny_bert_learns_separable_tags_exactly(tmp_path):
    """People and places are set by the word alone (helpers.write_name_ner: names, places and "New
    York" among neutral words): after training, every held-out word gets its tag. Tagging every word O
    would score token accuracy 0.73 and F1 0. Seeds 0, 1, 2 and 42 on 1 and 2 threads are exact from
    epoch 4 or 5 on: 8 epochs leave room."""
    train, evaluation = write_name_ner(tmp_path / "data")
    bert = tiny_bert(tmp_path / "bert", constructed_texts())
    result = train_tiny(tmp_path / "run", bert, task="ner", **{
        "data.train": str(train), "data.eval": str(evaluation), "trainer.epochs": 8, "trainer.lr": 3e-3,
        "trainer.save_every": 0})
    assert result["eval"]["eval_samples"] == 40
    assert result["eval"]["accuracy"] == 1.0 and result["eval"]["f1"] == 1.0, result["eval"]


def test_eval_and_predict_on_the_saved_model(ner_run, tmp_path):
    out, _ = ner_run
    result = invoke("eval", "--model", out / "model", "--data", NER_SAMPLE / "eval.conll", "--output-dir", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "eval_results.json").read_text())["f1"] == pytest.approx(
        json.loads((out / "eval_results.json").read_text())["f1"])
    assert len((tmp_path / "e" / "predictions.jsonl").read_text().splitlines()) == 40

    result = invoke("eval", "--model", out / "model", "--data", NER_SAMPLE / "eval.conll", "--output-dir",
                    tmp_path / "c", "ner.constrained_decoding=true")
    assert result.exit_code == 0, result.output
    from sft_ner.schemes import first_violation
    for line in (tmp_path / "c" / "predictions.jsonl").read_text().splitlines():
        assert first_violation(json.loads(line)["pred_tags"], "iob2") is None

    text = "Angela Merkel visited Paris and met the Mayor of Lyon, Jean-Pierre Dubois."
    result = invoke("predict", "--model", out / "model", text, "")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == [text, ""] and records[1]["entities"] == []
    for entity in records[0]["entities"]:
        assert entity["text"] == text[entity["start"]:entity["end"]]
        assert entity["type"] in ("PER", "ORG", "LOC", "MISC") and 0 < entity["score"] <= 1

    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"tokens": ["Angela", "Merkel", "visited", "Paris"]}\n', encoding="utf-8")
    result = invoke("predict", "--model", out / "model", "--input", inputs)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["tokens"] == ["Angela", "Merkel", "visited", "Paris"] and len(record["tags"]) == 4


def test_predict_reads_a_txt_file_as_one_text_per_line(ner_run, tmp_path):
    """``sft predict --input FILE.txt``: each line is one text, split into words as a TEXT argument is,
    never CoNLL columns; a CoNLL file under another name still gives one sentence per block."""
    out, _ = ner_run
    texts = ["Angela Merkel visited Paris .", "the Mayor of Lyon, Jean-Pierre Dubois, met her", "Rome"]
    inputs = tmp_path / "sentences.txt"
    inputs.write_text(f"{texts[0]}\n\n{texts[1]}\n{texts[2]}\n", encoding="utf-8")  # a blank line is no text
    from_file = invoke("predict", "--model", out / "model", "--input", inputs)
    assert from_file.exit_code == 0, from_file.output
    from_arguments = invoke("predict", "--model", out / "model", *texts)
    assert from_arguments.exit_code == 0, from_arguments.output
    records = [json.loads(line) for line in from_file.stdout.splitlines()]
    assert [r["text"] for r in records] == texts
    assert records == [json.loads(line) for line in from_arguments.stdout.splitlines()]

    conll = tmp_path / "sentences.conll"
    conll.write_text("Angela NNP\nMerkel NNP\n\nRome NNP\n", encoding="utf-8")
    result = invoke("predict", "--model", out / "model", "--input", conll)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["tokens"] for r in records] == [["Angela", "Merkel"], ["Rome"]]
    assert [len(r["tags"]) for r in records] == [2, 1]


def test_unseen_entity_type_in_eval_data(ner_run, tmp_path):
    out, _ = ner_run
    data = tmp_path / "dev.conll"
    data.write_text("Paris B-LOC\n\nthe O\nOlympics B-EVENT\n", encoding="utf-8")
    result = invoke("eval", "--model", out / "model", "--data", data)
    assert result.exit_code == 2
    assert result.stderr.strip() == (f"error: {data} line 3: entity type 'EVENT' never seen in training "
                                     "(known types: LOC, MISC, ORG, PER)")
