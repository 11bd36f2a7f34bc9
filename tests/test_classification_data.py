"""Classification data: CSV/TSV/JSONL reading, label handling, and metrics against reference libraries."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from sft_classification.metrics import classification_metrics, regression_metrics
from sft_classification.reader import read_examples
from sft_core.errors import DataError
from sft_core.host.manager import PluginHost

from helpers import make_config


def data_config(host, **values):
    """The ``data`` section of a classification config, from flat keys without the ``data.`` prefix."""
    return make_config(host, **{f"data.{k}": v for k, v in values.items()}).data


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def read(host, path, need_labels=True, **data):
    return read_examples(path, data_config(host, **data), need_labels=need_labels)


def fields(examples, *keys):
    return [tuple(e[k] for k in keys) for e in examples]


# --- formats ---------------------------------------------------------------------------------

def test_csv_with_quoted_commas(host, tmp_path):
    path = write(tmp_path / "reviews.csv",
                 'text,label\n"Loud, cramped, and overpriced",negative\n"Warm staff; great, fresh bread",positive\n')
    examples = read(host, path)
    assert fields(examples, "text", "label", "line") == [
        ("Loud, cramped, and overpriced", "negative", 2), ("Warm staff; great, fresh bread", "positive", 3)]
    assert all(e["text_pair"] is None for e in examples)


def test_csv_with_byte_order_mark(host, tmp_path):
    # "CSV UTF-8" from Excel starts with a BOM, which must not become part of the first column name
    path = tmp_path / "excel.csv"
    path.write_bytes(b'\xef\xbb\xbfsentence,label\n"Fine, really",1\nbad,0\n')
    assert fields(read(host, path), "text", "label") == [("Fine, really", "1"), ("bad", "0")]


def test_glue_tsv_keeps_quotes_inside_text(host, tmp_path):
    # SST-2 layout: quotes are text, not quoting (an unbalanced one must not swallow later rows)
    path = write(tmp_path / "train.tsv",
                 'sentence\tlabel\n'
                 '"hide new secretions from the parental units \t0\n'
                 'it \'s a "charming" and often affecting journey . \t1\n'
                 'the "best" film\t1\n')
    examples = read(host, path)
    assert [e["text"] for e in examples] == [
        '"hide new secretions from the parental units ', 'it \'s a "charming" and often affecting journey . ',
        'the "best" film']
    assert [e["label"] for e in examples] == ["0", "1", "1"]
    assert [e["line"] for e in examples] == [2, 3, 4]


def test_tsv_without_header_with_columns_cola(host, tmp_path):
    path = write(tmp_path / "in_domain_train.tsv",
                 "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
                 "clc95\t0\t*\tThe more books I ask to whom he will give, the more he reads.\n"
                 'c_13\t1\t\tHe said "hello" twice.\n')
    examples = read(host, path, columns=["source", "label", "original_label", "sentence"])
    assert fields(examples, "text", "label", "line") == [
        ("Our friends won't buy this analysis, let alone the next one we propose.", "1", 1),
        ("The more books I ask to whom he will give, the more he reads.", "0", 2),
        ('He said "hello" twice.', "1", 3),
    ]


def test_columns_given_as_override_text(host, tmp_path):
    path = write(tmp_path / "cola.tsv", "gj04\t1\t\tA sentence.\nclc95\t0\t*\tAnother one.\n")
    config = make_config(host, **{"data.columns": "source,label,original_label,sentence"})
    assert [e["text"] for e in read_examples(path, config.data, True)] == ["A sentence.", "Another one."]


def test_header_detection(host, tmp_path):
    with_header = write(tmp_path / "with.tsv", "label\tsentence\n1\tgood\n0\tbad\n")
    assert fields(read(host, with_header), "text", "label") == [("good", "1"), ("bad", "0")]

    without = write(tmp_path / "without.tsv", "good\t1\nbad\t0\n")
    with pytest.raises(DataError, match=r"cannot find the text column among 0, 1; set data.text_column"):
        read(host, without)
    # data.header=false with positional names: every row is an example
    assert fields(read(host, without, header=False, text_column="0", label_column="1"), "text", "label") == [
        ("good", "1"), ("bad", "0")]
    # data.columns implies no header: the first row is data even when it looks like a header
    assert len(read(host, with_header, columns=["label", "sentence"])) == 3
    # an explicit header=true takes the first row as names even when they are unusual
    odd = write(tmp_path / "odd.csv", "body,stars\nnice,5\nmeh,2\n")
    assert fields(read(host, odd, header=True, text_column="body", label_column="stars"), "text", "label") == [
        ("nice", "5"), ("meh", "2")]


def test_single_column_file_without_header_is_text(host, tmp_path):
    path = write(tmp_path / "inputs.txt", "first input\nsecond input\n")
    examples = read(host, path, need_labels=False)
    assert fields(examples, "text", "label") == [("first input", None), ("second input", None)]


def test_jsonl(host, tmp_path):
    rows = [{"text": "nice", "label": 1, "id": 7}, {"text": "bad", "label": 0}, {"text": "ok", "label": 1.0}]
    path = write(tmp_path / "data.jsonl", "\n".join(json.dumps(r) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]) + "\n")
    examples = read(host, path)
    assert fields(examples, "text", "label", "line") == [("nice", 1, 1), ("bad", 0, 2), ("ok", 1.0, 4)]


@pytest.mark.parametrize("first, second", [("sentence1", "sentence2"), ("question", "sentence"),
                                           ("premise", "hypothesis")])
def test_sentence_pairs_detected(host, tmp_path, first, second):
    path = write(tmp_path / "pairs.tsv", f"idx\t{first}\t{second}\tlabel\n"
                                         "0\tWhat is it?\tIt is a cat.\tentailment\n"
                                         "1\tA man sleeps.\tA man runs.\tnot_entailment\n")
    examples = read(host, path)
    assert fields(examples, "text", "text_pair", "label") == [
        ("What is it?", "It is a cat.", "entailment"), ("A man sleeps.", "A man runs.", "not_entailment")]


def test_pair_columns_set_explicitly(host, tmp_path):
    path = write(tmp_path / "pairs.jsonl", json.dumps({"a": "x", "b": "y", "label": "1"}) + "\n")
    assert fields(read(host, path, text_column="a", text_pair_column="b"), "text", "text_pair") == [("x", "y")]


# --- errors ----------------------------------------------------------------------------------

def test_malformed_tsv_row_names_file_and_line(host, tmp_path):
    path = write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\t1\n\nbad\t0\textra\nfine\t1\n")
    with pytest.raises(DataError) as caught:
        read(host, path)
    assert str(caught.value) == f"{path} line 4: 3 fields, expected 2 (sentence, label)"


def test_invalid_json_line(host, tmp_path):
    path = write(tmp_path / "dev.jsonl", '{"text": "a", "label": 1}\n\n{"text": "b", "label": 0\n')
    with pytest.raises(DataError, match=rf"^{path} line 3: invalid JSON"):
        read(host, path)


def test_json_line_not_an_object(host, tmp_path):
    path = write(tmp_path / "dev.jsonl", '{"text": "a", "label": 1}\n["b", 0]\n')
    with pytest.raises(DataError, match=rf"^{path} line 2: expected a JSON object, got list"):
        read(host, path)


def test_missing_column_names_the_key_to_set(host, tmp_path):
    no_text = write(tmp_path / "no_text.jsonl", json.dumps({"body": "a", "label": 1}) + "\n")
    with pytest.raises(DataError, match=r"cannot find the text column among body, label; set data.text_column"):
        read(host, no_text)
    no_label = write(tmp_path / "no_label.jsonl", json.dumps({"text": "a", "stars": 1}) + "\n")
    with pytest.raises(DataError, match=r"cannot find the label column among text, stars; set data.label_column"):
        read(host, no_label)
    assert read(host, no_label, need_labels=False)[0]["label"] is None  # prediction needs no label
    with pytest.raises(DataError, match=r"no column 'nope' \(set by data.text_column\); columns: text, stars"):
        read(host, no_label, text_column="nope")


def test_empty_or_missing_values(host, tmp_path):
    path = write(tmp_path / "gaps.jsonl", json.dumps({"text": "a", "label": 1}) + "\n" + json.dumps({"text": " ", "label": 0}) + "\n")
    with pytest.raises(DataError, match=rf"{path} line 2: empty or missing text in column 'text'"):
        read(host, path)
    path = write(tmp_path / "nolabel.csv", "text,label\na,1\nb,\n")
    with pytest.raises(DataError, match=rf"{path} line 3: missing label in column 'label'"):
        read(host, path)


@pytest.mark.parametrize("name, text", [("empty.tsv", ""), ("blank.csv", "\n\n"), ("empty.jsonl", "\n"),
                                        ("header_only.tsv", "sentence\tlabel\n")])
def test_empty_file(host, tmp_path, name, text):
    path = write(tmp_path / name, text)
    with pytest.raises(DataError, match=rf"^{path}: the file holds no examples$"):
        read(host, path)


def test_missing_file(host, tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        read(host, tmp_path / "nowhere.tsv")


# --- labels (through the task) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def task_for(host):
    from sft_classification.task import ClassificationTask

    def build(**values):
        return ClassificationTask(make_config(host, **values))
    return build


def test_unknown_eval_label_is_an_error(task_for, tmp_path):
    train = write(tmp_path / "train.csv", "text,label\ngood,positive\nbad,negative\nfine,positive\n")
    dev = write(tmp_path / "dev.csv", "text,label\nnice,positive\nso-so,neutral\n")
    task = task_for()
    task.setup(task.load("train", str(train)))
    assert task.labels == ["negative", "positive"]
    with pytest.raises(DataError) as caught:
        task.load("eval", str(dev))
    assert str(caught.value) == (f"{dev} line 3: label 'neutral' never seen in training "
                                 "(known labels: negative, positive)")
    # prediction inputs may carry any label (or none)
    assert len(task.load("predict", str(dev))) == 2


def test_integer_json_labels_match_text_labels(task_for, tmp_path):
    train = write(tmp_path / "train.jsonl", "".join(json.dumps({"text": t, "label": y}) + "\n"
                                                   for t, y in [("a", 0), ("b", 1), ("c", 1.0)]))
    dev = write(tmp_path / "dev.tsv", "sentence\tlabel\nd\t1\ne\t0\n")
    task = task_for()
    task.setup(task.load("train", str(train)))
    assert task.labels == ["0", "1"] and not task.regression
    assert [e["label"] for e in task.load("eval", str(dev))] == ["1", "0"]


def test_regression_detected_for_real_valued_labels(task_for, tmp_path):
    path = write(tmp_path / "sts-b.tsv", "index\tsentence1\tsentence2\tscore\n"
                                         "0\tA plane is taking off.\tAn air plane is taking off.\t5.000\n"
                                         "1\tA man is playing a flute.\tA man is playing a flute.\t3.800\n"
                                         "2\tA man is smoking.\tA man is skating.\t0.500\n"
                                         "3\tA cat sleeps.\tA dog barks.\t0\n")
    task = task_for()
    examples = task.load("train", str(path))
    assert examples[0]["text_pair"] == "An air plane is taking off."
    task.setup(examples)
    assert task.regression and task.labels == [] and task.main_metric == "pearson"
    assert [e["label"] for e in examples] == [5.0, 3.8, 0.5, 0.0]


def test_whole_number_labels_stay_classes(task_for, tmp_path):
    path = write(tmp_path / "stars.csv", "text,label\na,1\nb,5\nc,3\nd,5\n")
    task = task_for()
    task.setup(task.load("train", str(path)))
    assert not task.regression and task.labels == ["1", "3", "5"]


def test_forced_regression_rejects_text_labels(task_for, tmp_path):
    path = write(tmp_path / "words.csv", "text,label\na,good\nb,bad\n")
    task = task_for(**{"classification.problem_type": "regression"})
    with pytest.raises(DataError, match="label 'good' is not a number"):
        task.setup(task.load("train", str(path)))


def test_label_map_sorted_numerically(task_for, tmp_path):
    path = write(tmp_path / "many.tsv", "sentence\tlabel\na\t10\nb\t2\nc\t0\nd\t1\ne\t-1\n")
    task = task_for()
    task.setup(task.load("train", str(path)))
    assert task.labels == ["-1", "0", "1", "2", "10"]


def test_text_labels_sorted_and_single_label_rejected(task_for, tmp_path):
    task = task_for()
    task.setup(task.load("train", str(write(tmp_path / "t.csv", "text,label\na,pos\nb,neg\nc,mid\n"))))
    assert task.labels == ["mid", "neg", "pos"]
    task = task_for()
    with pytest.raises(DataError, match="holds a single class"):
        task.setup(task.load("train", str(write(tmp_path / "one.csv", "text,label\na,pos\nb,pos\n"))))


# --- metrics against reference implementations ------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 2, 300)
    pred = np.where(rng.random(300) < 0.7, gold, rng.integers(0, 2, 300))  # correlated, not perfect
    got = classification_metrics(pred.tolist(), gold.tolist(), 2)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(gold, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(gold, pred, pos_label=1))
    assert got["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(gold, pred))
    assert 0 < got["matthews_correlation"] < 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_class_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, 300)
    pred = np.where(rng.random(300) < 0.5, gold, rng.integers(0, 3, 300))
    got = classification_metrics(pred.tolist(), gold.tolist(), 3)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(gold, pred))
    assert got["f1"] == pytest.approx(skm.f1_score(gold, pred, average="macro"))
    assert got["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(gold, pred))


def test_binary_f1_is_of_label_one_not_macro():
    gold, pred = [1, 1, 1, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 1]
    got = classification_metrics(pred, gold, 2)
    assert got["f1"] == pytest.approx(skm.f1_score(gold, pred)) == pytest.approx(0.4)
    assert got["f1"] != pytest.approx(skm.f1_score(gold, pred, average="macro"))


def test_degenerate_predictions():
    gold, pred = [0, 1, 2, 1, 0, 2], [1, 1, 1, 1, 1, 1]
    got = classification_metrics(pred, gold, 3)
    assert got["matthews_correlation"] == 0.0 == skm.matthews_corrcoef(gold, pred)
    assert got["f1"] == pytest.approx(skm.f1_score(gold, pred, average="macro", zero_division=0))
    perfect = classification_metrics(gold, gold, 3)
    assert perfect == {"accuracy": 1.0, "f1": 1.0, "matthews_correlation": 1.0}


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_metrics_match_scipy(seed):
    rng = np.random.default_rng(seed)
    gold = rng.uniform(0, 5, 200)
    pred = gold + rng.normal(0, 1.5, 200)
    got = regression_metrics(pred.tolist(), gold.tolist())
    assert got["pearson"] == pytest.approx(stats.pearsonr(pred, gold)[0])
    assert got["spearman"] == pytest.approx(stats.spearmanr(pred, gold)[0])
    assert got["mse"] == pytest.approx(skm.mean_squared_error(gold, pred))
    assert got["pearson"] != pytest.approx(got["spearman"])  # not one number computed twice


def test_regression_metrics_with_constant_predictions():
    got = regression_metrics([2.0, 2.0, 2.0], [1.0, 2.0, 3.0])
    assert got["pearson"] == 0.0 and got["spearman"] == 0.0
    assert got["mse"] == pytest.approx(2 / 3)


def test_capitalised_header_is_detected(tmp_path):
    from helpers import make_config
    from sft_core.host.manager import PluginHost
    from sft_classification.reader import read_examples

    path = tmp_path / "caps.csv"
    path.write_text("Sentence,Label\nfine film,1\nawful film,0\n")
    config = make_config(PluginHost())
    examples = read_examples(path, config.data, need_labels=True)
    assert [(e["text"], e["label"]) for e in examples] == [("fine film", "1"), ("awful film", "0")]


def test_float_spelt_labels_are_one_class(tmp_path):
    from helpers import make_config
    from sft_core.host.manager import PluginHost
    from sft_classification.task import ClassificationTask

    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "a", "label": 5.0}\n{"text": "b", "label": 1}\n')
    dev = tmp_path / "dev.tsv"
    dev.write_text("sentence\tlabel\nc\t5.0\nd\t1\n")
    task = ClassificationTask(make_config(PluginHost()))
    task.setup(task.load("train", str(train)))
    assert task.labels == ["1", "5"]
    assert len(task.load("eval", str(dev))) == 2  # "5.0" in a TSV is the class 5 of the JSONL


def test_max_train_samples_reads_the_first_rows_only(tmp_path):
    from helpers import make_config
    from sft_core.host.manager import PluginHost
    from sft_classification.task import ClassificationTask

    for name, text in (("h.tsv", "sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(10))),
                       ("n.tsv", "".join(f"s{i}\t{i % 2}\n" for i in range(10))),
                       ("j.jsonl", "".join(f'{{"text": "s{i}", "label": {i % 2}}}\n' for i in range(10)))):
        path = tmp_path / name
        path.write_text(text)
        config = make_config(PluginHost(), **{"data.max_train_samples": 3, "data.columns": ["sentence", "label"]}
                             if name == "n.tsv" else {"data.max_train_samples": 3})
        examples = ClassificationTask(config).load("train", str(path))
        assert [e["text"] for e in examples] == ["s0", "s1", "s2"], name


def test_data_train_as_a_list_of_files_reads_them_in_turn(tmp_path, tiny_model):
    """GLUE CoLA's training set ships as two files: data.train takes a list."""
    from sft_core import api
    from sft_core.errors import ConfigError, SFTError

    first, second = tmp_path / "train.tsv", tmp_path / "val.tsv"
    first.write_text("".join(f"src\t{i % 2}\t*\tsentence number {i}\n" for i in range(12)))
    second.write_text("".join(f"src\t{i % 2}\t*\tanother sentence {i}\n" for i in range(8)))
    overrides = {"data.columns": ["source", "label", "original_label", "sentence"], "trainer.epochs": 1,
                 "trainer.batch_size": 4, "trainer.max_length": 16, "trainer.save_every": 0}
    result = api.train(task="classification", model=tiny_model, output_dir=str(tmp_path / "run"),
                       overrides={"data.train": [str(first), str(second)], **overrides}, host=PluginHost())
    assert result["train"]["train_samples"] == 20  # 12 + 8 examples, one epoch
    with pytest.raises(SFTError, match=r"data file not found: .*gone.tsv \(data.train\)"):
        api.train(task="classification", model=tiny_model, output_dir=str(tmp_path / "run2"),
                  overrides={"data.train": [str(first), str(tmp_path / "gone.tsv")], **overrides}, host=PluginHost())
    with pytest.raises(ConfigError, match="data.train_rows=0-5 picks rows of one file, but data.train is a list of 2"):
        api.run_config(task="classification", overrides={"data.train": [str(first), str(second)],
                                                         "data.train_rows": "0-5"}, host=PluginHost())
    with pytest.raises(SFTError, match="data.train is an empty list"):
        api.train(task="classification", model=tiny_model, output_dir=str(tmp_path / "run3"),
                  overrides={"data.train": [], **overrides}, host=PluginHost())
