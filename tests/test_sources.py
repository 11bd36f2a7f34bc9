"""Data paths: Hugging Face datasets as hf:NAME[:CONFIG]@SPLIT (a local dataset folder stands in for
the hub here), and paths naming files by their shared prefix."""

from __future__ import annotations

import json

import pytest

from sft_core.engine import sources
from sft_core.errors import SFTError

from helpers import invoke


def test_parse_names_dataset_config_and_split():
    assert sources.parse("hf:nyu-mll/glue:sst2@train") == ("nyu-mll/glue", "sst2", "train")
    assert sources.parse("hf:rajpurkar/squad@validation") == ("rajpurkar/squad", None, "validation")
    assert sources.parse("hf:./data/my set@test[:10]") == ("./data/my set", None, "test[:10]")
    with pytest.raises(SFTError, match=r"expected hf:DATASET\[:CONFIG\]@SPLIT"):
        sources.parse("hf:nyu-mll/glue:sst2")


@pytest.fixture
def sentiment(tmp_path):
    """A local dataset folder with a class-label column, in the layout of GLUE SST-2 on the hub."""
    import datasets

    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["negative", "positive"])})
    rows = [("a warm and funny film", 1), ("dull, long and loud", 0), ("moving and beautifully acted", 1),
            ("a boring mess", 0)] * 6
    folder = tmp_path / "sst2"
    folder.mkdir()
    for split, part in (("train", rows), ("test", rows[:8])):
        table = datasets.Dataset.from_dict({"sentence": [r[0] for r in part], "label": [r[1] for r in part]},
                                           features=features)
        table.to_parquet(str(folder / f"{split}.parquet"))
    return folder


def test_a_split_is_written_once_as_jsonl_with_label_names(sentiment, monkeypatch, tmp_path):
    monkeypatch.setenv("SFT_CACHE_DIR", str(tmp_path / "cache"))
    path = sources.resolve(f"hf:{sentiment}@test")
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert len(rows) == 8 and rows[0] == {"sentence": "a warm and funny film", "label": "positive"}
    before = (tmp_path / "cache").stat().st_mtime_ns, open(path).read()
    assert sources.resolve(f"hf:{sentiment}@test") == path and open(path).read() == before[1]
    assert sources.resolve(f"hf:{sentiment}@train") != path
    assert sources.resolve("local/file.tsv") == "local/file.tsv"


def test_lists_of_class_labels_become_tag_names(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setenv("SFT_CACHE_DIR", str(tmp_path / "cache"))
    tags = datasets.ClassLabel(names=["O", "B-PER", "I-PER"])
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(tags)})
    folder = tmp_path / "conll"
    folder.mkdir()
    datasets.Dataset.from_dict({"tokens": [["Ada", "Lovelace", "wrote"]], "ner_tags": [[1, 2, 0]]},
                               features=features).to_parquet(str(folder / "train.parquet"))
    row = json.loads(open(sources.resolve(f"hf:{folder}@train")).readline())
    assert row == {"tokens": ["Ada", "Lovelace", "wrote"], "ner_tags": ["B-PER", "I-PER", "O"]}


def test_a_dataset_that_cannot_be_loaded_is_one_line(tmp_path):
    with pytest.raises(SFTError, match=r"^cannot load dataset hf:.*nowhere@train: ") as info:
        sources.resolve(f"hf:{tmp_path / 'nowhere'}@train")
    assert "\n" not in str(info.value)


def test_run_and_eval_take_datasets(sentiment, tiny_model, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "--task", "classification", "--model", tiny_model, "--train", f"hf:{sentiment}@train",
                    "--eval", f"hf:{sentiment}@test", "--output-dir", out, "trainer.max_steps=2",
                    "trainer.save_every=0")
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads((out / "model" / "sft_task.json").read_text())["state"]["labels"] == ["negative", "positive"]
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == 8
    result = invoke("eval", "--model", out / "model", "--data", f"hf:{sentiment}@test", "--output-dir",
                    tmp_path / "eval")
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads((tmp_path / "eval" / "eval_results.json").read_text())["eval_samples"] == 8


def test_paths_may_name_files_by_their_shared_prefix(tmp_path):
    (tmp_path / "train.en.gz").write_bytes(b"")
    assert sources.exists(str(tmp_path / "train"))  # parallel text: train.en.gz (+ train.de.gz)
    assert sources.exists(str(tmp_path / "train.en.gz"))
    assert not sources.exists(str(tmp_path / "dev"))
    assert sources.exists("hf:any/dataset@train")  # checked when loaded
