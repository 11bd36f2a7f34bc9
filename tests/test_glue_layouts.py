"""The GLUE file layouts the benchmark recipes read, and row ranges that split one file in two.

Small inline copies of each layout (not the real data): CoLA without header, STS-B with its ten
columns and stray quotes, QNLI question/sentence, RTE as SuperGLUE JSONL and as GLUE TSV.
"""

from __future__ import annotations

import json

import pytest

from sft_classification.options import parse_rows
from sft_core.errors import ConfigError, DataError

from helpers import make_config

COLA = ("gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
        "gj04\t0\t*\tThe more you eat, the most you want.\n"
        'bc01\t1\t\tHe said "no" twice.\n'
        "bc01\t0\t*\tJohn is eager for to win.\n"
        "ks08\t1\t\tI wonder who you saw.\n"
        "ks08\t0\t*\tWho do you wonder whether saw Mary?\n")
COLA_COLUMNS = ["source", "label", "original_label", "sentence"]


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


def task_for(host, **values):
    from sft_classification.task import ClassificationTask

    return ClassificationTask(make_config(host, **values))


# --- layouts ---------------------------------------------------------------------------------

def test_cola_without_header(host, tmp_path):
    path = write(tmp_path / "dev.tsv", COLA)
    task = task_for(host, **{"data.columns": COLA_COLUMNS})
    examples = task.load("train", str(path))
    task.setup(examples)
    assert [e["label"] for e in examples] == ["1", "0", "1", "0", "1", "0"]
    assert examples[2]["text"] == 'He said "no" twice.' and examples[2]["text_pair"] is None
    assert task.labels == ["0", "1"] and not task.regression


def test_stsb_ten_columns_regression_quotes_kept(host, tmp_path):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    rows = ['0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n',
            '1\tmain-news\theadlines\t2013\t0002\tnone\tnone\t"Obama to visit\tObama visits "soon".\t2.400\n',
            '2\tmain-forums\tanswers\t2015\t0003\tnone\tnone\tA cat sleeps.\tA dog barks.\t0.000\n']
    path = write(tmp_path / "train.tsv", head + "".join(rows))
    task = task_for(host, **{"classification.problem_type": "regression"})
    examples = task.load("train", str(path))
    task.setup(examples)
    assert [(e["text"], e["text_pair"]) for e in examples][1] == ('"Obama to visit', 'Obama visits "soon".')
    assert [e["label"] for e in examples] == [5.0, 2.4, 0.0]
    assert task.regression and task.main_metric == "pearson"
    auto = task_for(host)  # real-valued scores are detected as regression without the option too
    auto.setup(auto.load("train", str(path)))
    assert auto.regression


def test_qnli_question_sentence(host, tmp_path):
    path = write(tmp_path / "dev.tsv", "index\tquestion\tsentence\tlabel\n"
                                       "0\tWhat came into force?\tThe new constitution came into force.\tentailment\n"
                                       "1\tWho wrote it?\tIt rained all day.\tnot_entailment\n")
    examples = task_for(host).load("eval", str(path))
    assert [(e["text"], e["text_pair"], e["label"]) for e in examples] == [
        ("What came into force?", "The new constitution came into force.", "entailment"),
        ("Who wrote it?", "It rained all day.", "not_entailment")]


# every GLUE task's own header, as its download writes it: read with no setting at all
GLUE_HEADERS = {
    "MRPC": ("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
             "1\t702876\t702977\tAmrozi accused his brother.\tReferring to him, Amrozi accused his brother.\n"
             "0\t2108705\t2108831\tYucaipa owned Dominick's.\tYucaipa bought Dominick's in 1995.\n"),
    "QQP": ("id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
            "201359\t303345\t303346\tWhy are you sad?\tWhat makes you sad?\t1\n"
            "263843\t69383\t380476\tHow do I learn Go?\tWho founded Rome?\t0\n"),
    "WNLI": ("index\tsentence1\tsentence2\tlabel\n"
             "0\tThe cup did not fit, it was too big.\tThe cup was too big.\t1\n"
             "1\tI poured water, it was empty.\tThe bottle was empty.\t0\n"),
    "MNLI": ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
             "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
             "0\t31193\t31193n\tgovernment\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe cat sat.\tA cat sat.\t"
             "entailment\tentailment\n"
             "1\t101457\t101457e\ttelephone\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tIt rained.\tIt was dry.\t"
             "contradiction\tcontradiction\n"),
}


@pytest.mark.parametrize("name", list(GLUE_HEADERS))
def test_every_glue_header_is_recognised(host, tmp_path, name):
    """MRPC's header (Quality, #1 String, #2 String) was read as a data row of columns 0-4."""
    path = write(tmp_path / "dev.tsv", GLUE_HEADERS[name])
    examples = task_for(host).load("train", str(path))
    rows = [line.split("\t") for line in GLUE_HEADERS[name].splitlines()]
    header = rows[0]
    text, pair, label = {"MRPC": (3, 4, 0), "QQP": (3, 4, 5), "WNLI": (1, 2, 3), "MNLI": (8, 9, 11)}[name]
    assert [(e["text"], e["text_pair"], e["label"]) for e in examples] == [(r[text], r[pair], r[label]) for r in rows[1:]]
    assert header[label] in ("Quality", "is_duplicate", "label", "gold_label")


def test_a_first_row_holding_the_named_columns_is_a_header(host, tmp_path):
    path = write(tmp_path / "reviews.tsv", "Review Text\tStars\nLovely stay.\t5\nCold room.\t1\n")
    task = task_for(host, **{"data.text_column": "Review Text", "data.label_column": "Stars"})
    assert [(e["text"], e["label"]) for e in task.load("train", str(path))] == [("Lovely stay.", "5"), ("Cold room.", "1")]


def test_a_named_column_in_a_file_without_header_says_why(host, tmp_path):
    path = write(tmp_path / "reviews.tsv", "Lovely stay.\t5\nCold room.\t1\n")
    task = task_for(host, **{"data.text_column": "Review Text"})
    with pytest.raises(DataError, match=r"reviews.tsv: no column 'Review Text' \(set by data.text_column\): the file "
                                        r"was read without a header row, so its columns are positions 0-1"):
        task.load("train", str(path))


def test_rte_superglue_jsonl_train_glue_tsv_eval(host, tmp_path):
    train = write(tmp_path / "train.jsonl", "".join(json.dumps(r) + "\n" for r in [
        {"premise": "No weapons were found.", "hypothesis": "Weapons were found.", "label": "not_entailment", "idx": 0},
        {"premise": "Pope Benedict XVI was installed.", "hypothesis": "Benedict is pope.", "label": "entailment", "idx": 1}]))
    dev = write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n"
                                      "0\tDana Reeve died at 44.\tChristopher Reeve had an accident.\tnot_entailment\n")
    task = task_for(host)
    examples = task.load("train", str(train))
    task.setup(examples)
    assert (examples[0]["text"], examples[0]["text_pair"]) == ("No weapons were found.", "Weapons were found.")
    assert task.labels == ["entailment", "not_entailment"]
    held_out = task.load("eval", str(dev))  # the GLUE TSV labels match the JSONL ones
    assert held_out[0]["text_pair"] == "Christopher Reeve had an accident." and held_out[0]["label"] == "not_entailment"


# --- row ranges ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, ranges", [("0-799", [(0, 799)]), ("800-", [(800, None)]), ("5", [(5, 5)]),
                                          (" 0-9 , 20 ", [(0, 9), (20, 20)])])
def test_parse_rows(text, ranges):
    assert parse_rows(text, "data.train_rows") == ranges


@pytest.mark.parametrize("text, message", [("a-b", "expected 0-based row ranges"), ("-5", "expected 0-based"),
                                           ("9-3", "range 9-3 runs backwards"), ("0-3-5", "expected 0-based")])
def test_bad_row_ranges(host, text, message):
    with pytest.raises(ConfigError, match=f"data.train_rows={text!r}: {message}"):
        make_config(host, **{"data.train_rows": text})


def test_rows_split_one_file(host, tmp_path):
    path = str(write(tmp_path / "dev.tsv", COLA))
    values = {"data.columns": COLA_COLUMNS, "data.train": path, "data.eval": path}
    task = task_for(host, **values, **{"data.train_rows": "0-3", "data.eval_rows": "4-"})
    train, held_out = task.load("train", path), task.load("eval", path)
    assert [e["line"] for e in train] == [1, 2, 3, 4] and [e["line"] for e in held_out] == [5, 6]
    # prediction inputs and other files ignore the ranges (they belong to data.train / data.eval)
    assert len(task.load("predict", path)) == 6
    other = write(tmp_path / "other.tsv", COLA)
    assert len(task.load("eval", str(other))) == 6


def test_rows_after_a_seeded_shuffle(host, tmp_path):
    path = str(write(tmp_path / "dev.tsv", COLA))
    values = {"data.columns": COLA_COLUMNS, "data.train": path, "data.eval": path, "data.rows_seed": 3,
              "data.train_rows": "0-3", "data.eval_rows": "4-"}
    lines = [[e["line"] for e in task_for(host, **values).load(split, path)] for split in ("train", "eval")]
    again = [[e["line"] for e in task_for(host, **values).load(split, path)] for split in ("train", "eval")]
    assert lines == again  # the same seed, the same split
    assert sorted(lines[0] + lines[1]) == [1, 2, 3, 4, 5, 6]  # disjoint and complete
    assert lines[0] != [1, 2, 3, 4]  # shuffled, not the file order
    limited = task_for(host, **values, **{"data.max_train_samples": 2}).load("train", path)
    assert [e["line"] for e in limited] == lines[0][:2]  # the limit applies after the selection


def test_overlapping_rows_of_one_file_rejected(host, tmp_path):
    path = str(write(tmp_path / "dev.tsv", COLA))
    for train_rows, eval_rows in (("0-3", "3-"), ("0-", "5"), ("2-4", None)):
        with pytest.raises(ConfigError, match="are the same file .* share rows; give disjoint ranges"):
            make_config(host, **{"data.train": path, "data.eval": path, "data.train_rows": train_rows,
                                 "data.eval_rows": eval_rows})
    # different files may use any ranges
    make_config(host, **{"data.train": path, "data.eval": str(tmp_path / "b.tsv"), "data.train_rows": "0-3",
                         "data.eval_rows": "0-3"})


def test_rows_beyond_the_file(host, tmp_path):
    path = str(write(tmp_path / "dev.tsv", COLA))
    task = task_for(host, **{"data.columns": COLA_COLUMNS, "data.train": path, "data.train_rows": "2-9"})
    with pytest.raises(DataError, match=r"data.train_rows=2-9: .*dev.tsv has 6 data rows \(0-5\)"):
        task.load("train", path)
