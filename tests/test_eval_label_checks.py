"""``sft run`` reads the evaluation data after the task has learnt its labels from the training data (or,
on resume, from the checkpoint), so a label the model cannot predict is a one-line error naming its file."""

from __future__ import annotations

import json
import re

from helpers import invoke as run
from helpers import make_config


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_eval_label_never_seen_in_training_stops_sft_run(tmp_path, tiny_model):
    train, dev = tmp_path / "train.jsonl", tmp_path / "dev.jsonl"
    train.write_text("".join(json.dumps({"text": f"text {i}", "label": i % 2}) + "\n" for i in range(8)))
    dev.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in [("a", 0), ("b", 1), ("c", 7)]))
    out = tmp_path / "run"
    line = error_line(run("run", "--task", "classification", "--model", tiny_model, "--train", train, "--eval", dev,
                          "--output-dir", out, "trainer.max_steps=1"))
    assert re.fullmatch(rf"error: {re.escape(str(dev))} line 3: label '?7'? never seen in training "
                        r"\(known labels: 0, 1\)", line), line
    assert not (out / "model").exists() and not (out / "metrics.jsonl").exists()  # before any training


def test_an_eval_entity_type_never_seen_in_training_stops_sft_run(tmp_path, tiny_model):
    train, dev = tmp_path / "train.conll", tmp_path / "dev.conll"
    train.write_text("Anna B-PER\nsaw O\nParis B-LOC\n\nBoris B-PER\n")
    dev.write_text("Oslo B-LOC\n\nthe O\nOlympics B-EVENT\n")
    out = tmp_path / "run"
    line = error_line(run("run", "--task", "ner", "--model", tiny_model, "--train", train, "--eval", dev,
                          "--output-dir", out, "trainer.max_steps=1"))
    assert line == f"error: {dev} line 3: entity type 'EVENT' never seen in training (known types: LOC, PER)"
    assert not (out / "model").exists()


def test_ner_checks_eval_tags_as_it_reads_them_once_its_tags_are_known(host, tmp_path):
    from sft_core.errors import DataError
    from sft_ner.task import NERTask

    dev = tmp_path / "dev.conll"
    dev.write_text("Oslo B-LOC\n\nthe O\nOlympics B-EVENT\n")
    fresh = NERTask(make_config(host, "ner"))
    assert len(fresh.load("eval", str(dev))) == 2  # no tag set yet (a zero-shot evaluation defines it)
    restored = NERTask(make_config(host, "ner"))
    restored.load_state_dict({"labels": ["O", "B-LOC", "I-LOC"]})
    try:
        restored.load("eval", str(dev))
    except DataError as exc:
        assert str(exc) == f"{dev} line 3: entity type 'EVENT' never seen in training (known types: LOC)"
    else:
        raise AssertionError("an unknown entity type was read without an error")
