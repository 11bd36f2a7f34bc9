"""``sft eval`` and ``sft predict`` read their data whole, whatever sample limits the model was trained
with, and take config keys by ``--set KEY=VALUE`` (the Python API by ``overrides``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import sft_core as sft
from sft_core.errors import ConfigError

from helpers import SAMPLE, invoke, train_tiny

TEXTS = [json.loads(line)["sentence"] for line in (SAMPLE / "eval.jsonl").read_text().splitlines()]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def limited(tiny_model, tmp_path_factory) -> Path:
    """A model trained with data.max_eval_samples=4 and data.max_train_samples=16 (its run's own
    evaluation file: the built-in sample); and a file of 10 examples with the text in a column
    named ``utterance``."""
    root = tmp_path_factory.mktemp("limited")
    train_tiny(root / "run", tiny_model, **{"trainer.max_steps": 2, "trainer.save_every": 0,
                                            "data.max_eval_samples": 4, "data.max_train_samples": 16})
    assert len((root / "run" / "predictions.jsonl").read_text().splitlines()) == 4
    (root / "ten.jsonl").write_text("".join(json.dumps({"sentence": t, "label": "positive"}) + "\n"
                                            for t in TEXTS[:10]))
    (root / "utterances.jsonl").write_text("".join(json.dumps({"utterance": t}) + "\n" for t in TEXTS[:10]))
    return root


def test_eval_scores_the_whole_file_not_the_training_limit(limited):
    out = limited / "eval-ten"
    result = invoke("eval", "--model", limited / "run" / "model", "--data", limited / "ten.jsonl", "--output-dir", out)
    assert result.exit_code == 0, result.output
    assert len(lines(out / "predictions.jsonl")) == 10
    assert json.loads((out / "eval_results.json").read_text())["eval_samples"] == 10
    # without --data: the run's own evaluation data, whole (the built-in sample's 60 examples)
    metrics = sft.evaluate(str(limited / "run" / "model"), output_dir=str(limited / "eval-own"))
    assert metrics["eval_samples"] == 60


def test_a_limit_given_to_eval_applies(limited):
    model = limited / "run" / "model"
    for args, expected in ((["--set", "data.max_eval_samples=3"], 3), (["data.max_eval_samples=2"], 2),
                           (["data.max_eval_samples=2", "--set", "data.max_eval_samples=5"], 5)):
        out = limited / f"eval-{expected}"
        result = invoke("eval", "--model", model, "--data", limited / "ten.jsonl", "--output-dir", out, *args)
        assert result.exit_code == 0, result.output
        assert len(lines(out / "predictions.jsonl")) == expected, args
    metrics = sft.evaluate(str(model), str(limited / "ten.jsonl"), output_dir=str(limited / "eval-api"),
                           overrides={"data.max_eval_samples": 6})
    assert metrics["eval_samples"] == 6


def test_eval_with_data_ignores_the_runs_row_selection(tiny_model, tmp_path):
    data = tmp_path / "both.jsonl"
    data.write_text("".join(json.dumps({"sentence": t, "label": ["negative", "positive"][i % 2]}) + "\n"
                            for i, t in enumerate(TEXTS[:20])))
    train_tiny(tmp_path / "run", tiny_model, **{"trainer.max_steps": 1, "trainer.save_every": 0,
                                                "data.train": str(data), "data.eval": str(data),
                                                "data.train_rows": "0-13", "data.eval_rows": "14-"})
    assert len((tmp_path / "run" / "predictions.jsonl").read_text().splitlines()) == 6
    model = str(tmp_path / "run" / "model")
    assert sft.evaluate(model, output_dir=str(tmp_path / "own"))["eval_samples"] == 6  # the run's own evaluation rows
    assert sft.evaluate(model, str(data), output_dir=str(tmp_path / "whole"))["eval_samples"] == 20  # the file given


def test_predict_reads_the_whole_input_file_and_takes_settings_by_set(limited):
    model = limited / "run" / "model"
    result = invoke("predict", "--model", model, "--input", limited / "utterances.jsonl")
    assert result.exit_code == 2 and "cannot find the text column" in result.stderr  # no default name fits
    result = invoke("predict", "--model", model, "--input", limited / "utterances.jsonl",
                    "--set", "data.text_column=utterance")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == TEXTS[:10]  # all ten, though the model was trained with limits of 4 and 16


def test_predict_arguments_are_always_texts(limited):
    result = invoke("predict", "--model", limited / "run" / "model", "a=b", "trainer.eval_batch_size=8")
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["text"] for line in result.stdout.splitlines()] == ["a=b", "trainer.eval_batch_size=8"]


def test_an_unknown_key_in_set_is_a_config_error(limited):
    for command in (["predict", "--model", limited / "run" / "model", "great"],
                    ["eval", "--model", limited / "run" / "model", "--data", limited / "ten.jsonl"]):
        result = invoke(*command, "--set", "trainer.eval_batch_sise=8")
        assert result.exit_code == 2, result.output
        assert result.stderr.strip() == ("error: override 'trainer.eval_batch_sise=8': unknown config key "
                                         "'trainer.eval_batch_sise' (did you mean 'trainer.eval_batch_size'?)")


def test_the_python_api_predict_takes_overrides(limited):
    model = str(limited / "run" / "model")
    whole, cut = sft.predict(model, TEXTS[:1]), sft.predict(model, TEXTS[:1], overrides={"trainer.max_length": 3})
    assert whole[0]["text"] == cut[0]["text"] and whole[0]["score"] != cut[0]["score"]  # one word of the text read
    with pytest.raises(ConfigError, match="unknown config key 'trainer.eval_batch_sise'"):
        sft.predict(model, ["great"], overrides={"trainer.eval_batch_sise": 8})
