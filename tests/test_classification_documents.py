"""Classification of real documents: class-folder datasets, long texts (truncate, head_tail,
windows), multi-label, class weights, and the prediction paths a new user tries first."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from sft_core.errors import ConfigError, DataError
from sft_core.testing import Case, TaskConformance, conformance_cases, tiny_bert

from helpers import invoke, make_config

CUES = {"positive": "superb", "negative": "dreadful"}
FILLER = ("the film was seen by many people in the city on a rainy day with friends and family after work "
          "before dinner near home").split()


def task_for(host, **values):
    return host.get_task("classification").factory(make_config(host, **values))


def write_folder(root: Path, classes: dict[str, list[str]]) -> Path:
    for label, texts in classes.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i, text in enumerate(texts):
            (root / label / f"{i}_{label}.txt").write_text(text, encoding="utf-8")
    return root


def long_cue_texts(n: int, seed: int, words: int = 60) -> list[tuple[str, str]]:
    """(text, label): the same filler words in every text (nothing there tells the classes apart),
    the label's cue word only at the very end; the classes in a seeded order."""
    rng = random.Random(seed)
    filler = " ".join((FILLER * (words // len(FILLER) + 1))[:words])
    labels = ["positive", "negative"] * (n // 2) + ["positive"] * (n % 2)
    rng.shuffle(labels)
    return [(f"{filler} {CUES[label]}", label) for label in labels]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cue_model(tmp_path_factory):
    texts = [t for t, _ in long_cue_texts(40, 0)] + list(CUES.values())
    return tiny_bert(tmp_path_factory.mktemp("tiny-long"), texts)


# --- a folder of class subfolders ------------------------------------------------------------------

def test_a_folder_of_class_subfolders_is_a_dataset(host, tmp_path):
    root = write_folder(tmp_path / "train", {"neg": [f"bad {i}<br />worse" for i in range(30)],
                                             "pos": [f"good {i}" for i in range(30)]})
    (root / "urls_pos.txt").write_text("http://example.com\n")  # beside the subfolders: not an example
    task = task_for(host)
    examples = task.load("train", str(root))
    assert len(examples) == 60 and {e["label"] for e in examples} == {"neg", "pos"}
    assert all(Path(e["file"]).parent.name == e["label"] for e in examples)
    assert "<br />" in next(e["text"] for e in examples if e["label"] == "neg")  # no cleaning unless asked
    # read in a seeded shuffled order: the first ten are not all of the first class, and the same every time
    first = [e["label"] for e in task_for(host, **{"data.max_train_samples": 10}).load("train", str(root))]
    assert len(first) == 10 and set(first) == {"neg", "pos"}
    assert [e["file"] for e in task.load("train", str(root))] == [e["file"] for e in examples]
    other = [e["file"] for e in task_for(host, **{"data.folder_seed": 1}).load("train", str(root))]
    assert sorted(other) == sorted(e["file"] for e in examples) and other != [e["file"] for e in examples]
    cleaned = task_for(host, **{"data.strip_html": True}).load("train", str(root))
    assert {e["text"] for e in cleaned if e["label"] == "neg"} == {f"bad {i}\nworse" for i in range(30)}


def test_folder_classes_option_and_errors(host, tmp_path):
    root = write_folder(tmp_path / "train", {"neg": ["bad"], "pos": ["good"], "unsup": ["meh", "so so"]})
    assert {e["label"] for e in task_for(host, **{"data.classes": "neg,pos"}).load("train", str(root))} == {"neg", "pos"}
    with pytest.raises(DataError, match=r"no subfolder 'neutral' \(set by data.classes\); subfolders: neg, pos, unsup"):
        task_for(host, **{"data.classes": "neutral"}).load("train", str(root))
    (root / "neg" / "broken.txt").write_bytes(b"caf\xe9")
    with pytest.raises(DataError, match=r"broken.txt: not UTF-8"):
        task_for(host).load("train", str(root))
    single = write_folder(tmp_path / "single", {"pos": ["good", "fine"]})
    task = task_for(host, **{"data.train": str(single)})
    with pytest.raises(DataError, match=r"training data \(.*single\) holds a single class \(pos\)"):
        task.setup(task.load("train", str(single)))


def test_disjoint_held_out_part_of_one_folder(host, tmp_path):
    root = write_folder(tmp_path / "train", {"neg": [f"bad {i}" for i in range(20)], "pos": [f"good {i}" for i in range(20)]})
    values = {"data.train": str(root), "data.eval": str(root), "data.train_rows": "0-29", "data.eval_rows": "30-"}
    task = task_for(host, **values)
    train, held_out = task.load("train", str(root)), task.load("eval", str(root))
    assert len(train) == 30 and len(held_out) == 10
    assert not {e["file"] for e in train} & {e["file"] for e in held_out}


@pytest.mark.parametrize("column", ["sentiment", "class", "target", "category"])
def test_common_label_column_names(host, tmp_path, column):
    path = tmp_path / "d.csv"
    path.write_text(f"text,{column}\ngood,pos\nbad,neg\n")
    assert [e["label"] for e in task_for(host).load("train", str(path))] == ["pos", "neg"]


# --- long texts -------------------------------------------------------------------------------------

def features_of(host, model, mode, texts, max_length=32, **extra):
    from sft_core.engine.batching import build_features

    task = task_for(host, **{"model": model, "trainer.max_length": max_length, "classification.long_text": mode, **extra})
    task.load_tokenizer(model)
    examples = [{"text": t, "text_pair": None, "label": label, "line": i + 1} for i, (t, label) in enumerate(texts)]
    task.setup(examples)
    return task, build_features(task, task.config, task.tokenizer, examples, "train", use_cache=False)


def test_head_tail_keeps_the_end_truncate_loses_it(host, cue_model):
    texts = long_cue_texts(6, 1)
    tokenizer = task_for(host).load_tokenizer(cue_model)
    cue_ids = {tokenizer.convert_tokens_to_ids(c) for c in CUES.values()}
    _, cut = features_of(host, cue_model, "truncate", texts)
    assert all(len(ids) == 32 and not cue_ids & set(ids) for ids in cut["input_ids"])
    task, kept = features_of(host, cue_model, "head_tail", texts, **{"classification.head_tokens": 10})
    for (text, _), ids in zip(texts, kept["input_ids"]):
        whole = tokenizer(text)["input_ids"]
        # [CLS], the first 10 sub-words, the last 20 (the cue last), [SEP]
        assert ids == whole[:11] + whole[-21:]
    assert task.report["train"] == {"examples": 6, "over_max_length": 6, "share": 1.0, "max_length": 32,
                                    "long_text": "head_tail"}


def test_windows_cover_every_sub_word_and_pool_per_text(host, cue_model):
    texts = long_cue_texts(3, 2) + [("a short one superb", "positive")]
    tokenizer = task_for(host).load_tokenizer(cue_model)
    task, windows = features_of(host, cue_model, "windows", texts, **{"classification.window_stride": 8})
    for i, (text, _) in enumerate(texts):
        body = tokenizer(text, add_special_tokens=False)["input_ids"]
        mine = [ids[1:-1] for ids, e in zip(windows["input_ids"], windows["example_id"]) if e == i]
        step = 30 - 8
        assert mine == [body[k:k + 30] for k in range(0, max(len(body) - 8, 1), step)]
    assert task.report["train"]["over_max_length"] == 3 and task.report["train"]["windows"] == len(windows)
    # pooled per text: the mean of its windows' logits (max by option)
    outputs = [{"logits": [float(k), -float(k)]} for k in range(len(windows))]
    means = {}
    for k, e in enumerate(windows["example_id"]):
        means.setdefault(e, []).append(k)
    predictions = task.postprocess(outputs, windows, [{}] * 4)
    for e, prediction in enumerate(predictions):
        mean = sum(means[e]) / len(means[e])
        expected = torch.tensor([mean, -mean]).softmax(-1)
        assert prediction["label"] == task.labels[int(expected.argmax())]
        assert prediction["score"] == pytest.approx(float(expected.max()))
    task.config.options.pool = "max"
    top = task.postprocess(outputs, windows, [{}] * 4)
    pooled = [torch.tensor([float(max(means[e])), -float(min(means[e]))]) for e in range(4)]  # each logit's max
    assert [p["score"] for p in top] == pytest.approx([float(x.softmax(-1).max()) for x in pooled])


@pytest.mark.parametrize("mode", ["head_tail", "windows"])
def test_the_cue_at_the_end_is_learned(host, cue_model, tmp_path, mode):
    """A label set by the last word of a long text: found by head_tail and windows (truncate never
    sees it, as the test above shows)."""
    from sft_core import api

    train = write_jsonl(tmp_path / "train.jsonl", [{"text": t, "label": y} for t, y in long_cue_texts(32, 3)])
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"text": t, "label": y} for t, y in long_cue_texts(16, 4)])
    result = api.train(task="classification", model=cue_model, train=str(train), eval=str(evaluation),
                       output_dir=str(tmp_path / "run"), overrides={
                           "trainer.max_length": 32, "classification.long_text": mode, "classification.head_tokens": 8,
                           "trainer.epochs": 40, "trainer.lr": 3e-3, "trainer.batch_size": 8, "trainer.seed": 0,
                           "trainer.eval_every": 0, "trainer.save_every": 0})
    assert result["eval"]["accuracy"] == 1.0
    info = json.loads((tmp_path / "run" / "run_info.json").read_text())
    assert info["data"]["eval"]["over_max_length"] == 16 and info["data"]["eval"]["long_text"] == mode


# --- multi-label ------------------------------------------------------------------------------------

def test_multi_label_metrics_against_a_direct_count():
    from sft_classification.metrics import multi_label_metrics

    rng = random.Random(0)
    gold = [sorted(rng.sample(range(4), rng.randint(0, 3))) for _ in range(50)]
    pred = [sorted(rng.sample(range(4), rng.randint(0, 3))) for _ in range(50)]
    got = multi_label_metrics(pred, gold, 4)
    pairs = [(j in p, j in g) for p, g in zip(pred, gold) for j in range(4)]
    tp = sum(a and b for a, b in pairs)
    fp = sum(a and not b for a, b in pairs)
    fn = sum(b and not a for a, b in pairs)
    assert got["micro_f1"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert got["hamming_loss"] == pytest.approx((fp + fn) / len(pairs))
    assert got["subset_accuracy"] == pytest.approx(sum(p == g for p, g in zip(pred, gold)) / 50)
    per_label = []
    for j in range(4):
        t = sum((j in p) and (j in g) for p, g in zip(pred, gold))
        f = sum((j in p) != (j in g) for p, g in zip(pred, gold))
        per_label.append(2 * t / (2 * t + f))
    assert got["macro_f1"] == pytest.approx(sum(per_label) / 4)


def test_multi_label_from_a_delimited_column(host, tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text("text,tags\nrain and wind,weather|news\ncake,food\nnothing at all,\n")
    task = task_for(host, **{"data.label_column": "tags", "data.label_delimiter": "|"})
    examples = task.load("train", str(path))
    task.setup(examples)
    assert task.problem == "multi_label" and task.labels == ["food", "news", "weather"]
    assert [e["label"] for e in examples] == [["news", "weather"], ["food"], []]
    assert task._target(examples[0]["label"], {"food": 0, "news": 1, "weather": 2}) == [0.0, 1.0, 1.0]
    assert task.main_metric == "micro_f1"
    from sft_core.task import metric_direction

    assert metric_direction(task, "hamming_loss") == "lower" and metric_direction(task, "micro_f1") == "higher"


def test_multi_label_threshold_and_records(host):
    task = task_for(host, **{"classification.problem_type": "multi_label", "classification.threshold": 0.3})
    task.load_state_dict({"labels": ["food", "music", "sports"], "problem": "multi_label"})
    # logits -> probabilities 0.5, 0.27, 0.88: music is under the threshold of 0.3
    prediction = task._prediction(torch.tensor([0.0, -1.0, 2.0]).numpy())
    assert prediction["label"] == ["sports", "food"]
    example = {"text": "t", "text_pair": None}
    record = task.format_prediction(prediction, example)
    assert list(record) == ["text", "prediction", "scores"] and record["prediction"] == ["sports", "food"]
    assert set(record["scores"]) == {"sports", "food"} and record["scores"]["sports"] == pytest.approx(0.880797, abs=1e-6)


TOPIC_CUES = {"sports": "football", "politics": "senate", "music": "guitar"}
TOPIC_FILLER = "the news in town this week was about a long story told by our neighbour over coffee".split()


def topic_rows(n: int, seed: int) -> list[dict]:
    """Separable multi-label data: each topic's cue word is in the text exactly when the topic is a label
    (none, one or two topics per text)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        labels = sorted(rng.sample(sorted(TOPIC_CUES), rng.randint(0, 2)))
        words = rng.choices(TOPIC_FILLER, k=rng.randint(3, 7))
        for label in labels:
            words.insert(rng.randint(0, len(words)), TOPIC_CUES[label])
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def test_multi_label_tiny_model_reaches_perfect_subset_accuracy(tmp_path):
    from sft_core import api

    train, evaluation = topic_rows(160, 0), topic_rows(40, 1)
    # eight attention heads: the first token has to gather several cue words at once
    model = tiny_bert(tmp_path / "tiny", [r["text"] for r in train + evaluation], hidden=64, heads=8)
    result = api.train(task="classification", model=model, train=str(write_jsonl(tmp_path / "train.jsonl", train)),
                       eval=str(write_jsonl(tmp_path / "eval.jsonl", evaluation)), output_dir=str(tmp_path / "run"),
                       overrides={"trainer.epochs": 30, "trainer.lr": 3e-3, "trainer.batch_size": 16, "trainer.seed": 0,
                                  "trainer.eval_every": 0, "trainer.save_every": 0})
    assert result["eval"]["subset_accuracy"] == 1.0 and result["eval"]["hamming_loss"] == 0.0
    written = [json.loads(line) for line in (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()]
    assert len(written) == 40 and all(sorted(r["prediction"]) == r["label"] for r in written)
    assert sum(not r["label"] for r in written) > 0  # texts with no topic at all are predicted as such
    predicted = api.predict(str(tmp_path / "run" / "model"), ["the guitar story after football", "a long week"])
    assert [sorted(p["prediction"]) for p in predicted] == [["music", "sports"], []]


@conformance_cases(Case("classification", overrides={"classification.problem_type": "multi_label"},
                        predict_texts=("a tennis match and a soup",)),
                   Case("classification", overrides={"classification.long_text": "windows", "trainer.max_length": 8,
                                                     "classification.window_stride": 2}),
                   Case("classification", overrides={"classification.long_text": "head_tail", "trainer.max_length": 8,
                                                     "classification.class_weights": "balanced"}))
class TestDocumentClassification(TaskConformance):
    pass


# --- class weights ----------------------------------------------------------------------------------

def test_balanced_class_weights_and_the_weighted_loss(host, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": f"t{i}", "label": "a" if i < 6 else "b"} for i in range(8)])
    task = task_for(host, **{"classification.class_weights": "balanced"})
    task.setup(task.load("train", str(path)))
    assert task.class_weights == pytest.approx([8 / (2 * 6), 8 / (2 * 2)])
    assert task.report["class_weights"] == {"a": pytest.approx(0.666667), "b": 2.0}

    class Logits(torch.nn.Module):
        def forward(self, input_ids, **_):
            return type("Out", (), {"logits": input_ids.float()})()

    batch = {"input_ids": torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 3.0]]), "labels": torch.tensor([0, 1, 0])}
    loss = task.compute_loss(Logits(), batch)  # set by the weights: without them the model's own loss is used
    weights = torch.tensor(task.class_weights)[batch["labels"]]
    each = torch.nn.functional.cross_entropy(batch["input_ids"], batch["labels"], reduction="none")
    assert loss.item() == pytest.approx(float((weights * each).sum() / weights.sum()))
    unweighted = task_for(host)
    unweighted.setup(unweighted.load("train", str(path)))
    assert not hasattr(unweighted, "compute_loss")
    listed = task_for(host, **{"classification.class_weights": [1.0, 3.0]})
    listed.setup(listed.load("train", str(path)))
    assert listed.class_weights == [1.0, 3.0]
    wrong = task_for(host, **{"classification.class_weights": [1.0, 2.0, 3.0]})
    with pytest.raises(ConfigError, match=r"3 weights for 2 labels \(a, b, in this order\)"):
        wrong.setup(wrong.load("train", str(path)))


# --- prediction paths ---------------------------------------------------------------------------------

def test_predict_reads_unlabelled_input_whatever_the_label_column(host, tmp_path):
    task = task_for(host, **{"data.label_column": "stars", "data.text_column": "review"})
    path = write_jsonl(tmp_path / "in.jsonl", [{"review": "good, really"}, {"review": "bad"}])
    assert [e["text"] for e in task.load("predict", str(path))] == ["good, really", "bad"]
    lines = tmp_path / "in.txt"
    lines.write_text("one, two, three\n\nfour\tfive\n")  # a comma is text; a tab separates a pair
    got = [(e["text"], e["text_pair"]) for e in task_for(host).load("predict", str(lines))]
    assert got == [("one, two, three", None), ("four", "five")]


def test_the_predicted_class_has_one_name_everywhere(host, tmp_path):
    task = task_for(host)
    task.load_state_dict({"labels": ["neg", "pos"], "problem": "single_label"})
    example = {"text": "fine", "text_pair": None, "label": "neg", "line": 1}
    prediction = {"label": "pos", "score": 0.75}
    task.write_predictions(tmp_path / "p.jsonl", [prediction], [example])
    written = json.loads((tmp_path / "p.jsonl").read_text())
    printed = task.format_prediction(prediction, example)
    assert written == {"text": "fine", "label": "neg", "prediction": "pos", "score": 0.75}
    assert printed == {"text": "fine", "prediction": "pos", "score": 0.75}


def test_sft_eval_and_predict_on_class_folders(host, cue_model, tmp_path):
    """Train on a folder, then `sft eval` on another folder in the same layout and `sft predict`
    on a folder: unchanged commands, every file scored."""
    from sft_core import api

    def folder(name, n, seed):
        rows = {"neg": [], "pos": []}
        for text, label in long_cue_texts(n, seed, words=4):
            rows["pos" if label == "positive" else "neg"].append(text)
        return write_folder(tmp_path / name, rows)

    api.train(task="classification", model=cue_model, train=str(folder("train", 32, 5)), eval=str(folder("dev", 8, 6)),
              output_dir=str(tmp_path / "run"), overrides={"trainer.epochs": 10, "trainer.lr": 3e-3, "trainer.batch_size": 8,
                                                           "trainer.eval_every": 0, "trainer.save_every": 0,
                                                           "data.max_eval_samples": 4})
    test = folder("test", 20, 7)
    result = invoke("eval", "--model", tmp_path / "run" / "model", "--data", test, "--output-dir", tmp_path / "eval")
    assert result.exit_code == 0, result.output
    written = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(written) == 20 and {Path(r["file"]).parent.name for r in written} == {"neg", "pos"}
    assert json.loads((tmp_path / "eval" / "eval_results.json").read_text())["accuracy"] == 1.0
    result = invoke("predict", "--model", tmp_path / "run" / "model", "--input", test)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert len(records) == 20 and all(r["prediction"] in ("neg", "pos") for r in records)


@pytest.mark.slow
def test_imdb_recipe_split_of_the_training_folder(host):
    """configs/imdb.yaml on the real download layout: 25,000 reviews, disjoint seeded parts, both classes
    in the first 4,000 training reviews, no markup left."""
    from sft_core.config import load_config_file

    root = Path(__file__).resolve().parents[1]
    data = root.parent / "shared" / "data"
    if not (data / "imdb" / "aclImdb" / "train").is_dir():
        pytest.skip("IMDB data not available")
    layer = load_config_file(root / "configs" / "imdb.yaml", str(data))
    layer.pop("task")
    task = host.get_task("classification").factory(make_config(host, **layer))
    train, held_out = task.load("train", task.config.data.train), task.load("eval", task.config.data.eval)
    assert len(train) == 4000 and len(held_out) == 2000
    assert not {e["file"] for e in train} & {e["file"] for e in held_out}
    counts = {label: sum(e["label"] == label for e in train) for label in ("neg", "pos")}
    assert min(counts.values()) > 1800, counts  # a shuffled order, not the first 4,000 files of one class
    assert not any("<br" in e["text"] for e in train + held_out)


def test_multi_label_metrics_as_an_evaluate_module(host):
    """A user's own script scores multi-label predictions exactly as sft does."""
    import evaluate

    import sft_core

    task = task_for(host, **{"classification.problem_type": "multi_label"})
    task.load_state_dict({"labels": ["food", "music", "sports"], "problem": "multi_label"})
    rng = random.Random(3)
    gold = [{"text": "t", "label": sorted(rng.sample(task.labels, rng.randint(0, 2)))} for _ in range(30)]
    predicted = [{"label": sorted(rng.sample(task.labels, rng.randint(0, 3)))} for _ in range(30)]
    metric = evaluate.load(sft_core.metric_module("classification"), "multi_label")
    got = metric.compute(predictions=[p["label"] for p in predicted], references=[e["label"] for e in gold],
                         labels=task.labels)
    assert got == pytest.approx(task.compute_metrics(predicted, gold))
