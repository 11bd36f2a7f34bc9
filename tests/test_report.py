"""``sft report``: one self-contained HTML page from synthetic run folders of each built-in task
and from a study folder: every plot present, every image a real PNG, the HTML well formed."""

from __future__ import annotations

import base64
import csv
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from sft_core.errors import SFTError

from helpers import sft

pytest.importorskip("matplotlib")

from sft_core.commands.report import write_report  # noqa: E402

VOID = {"meta", "img", "br", "hr", "link", "input"}


class Checker(HTMLParser):
    """Balanced tags, and the images' data."""

    def __init__(self):
        super().__init__()
        self.stack: list[str] = []
        self.images: list[dict] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'} at {self.getpos()}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check_page(path: Path) -> Checker:
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert not re.search(r"<script|src=\"(https?:)?//|href=\"https?:", page)  # nothing fetched, nothing run
    checker = Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and not checker.stack, (checker.errors, checker.stack)
    for image in checker.images:
        prefix = "data:image/png;base64,"
        assert image["src"].startswith(prefix)
        data = base64.b64decode(image["src"][len(prefix):])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 100 and height > 100
        assert (int(image["width"]), int(image["height"])) == (width, height)
        assert image["alt"]
    return checker


def alts(checker: Checker) -> list[str]:
    return [i["alt"] for i in checker.images]


def write_run(folder: Path, task: str, metrics: list[dict], lr: float = 1e-4, predictions=None, **config) -> Path:
    """A run folder as `sft run` writes it: config, run_info, a metrics log of 3 evaluations."""
    folder.mkdir(parents=True)
    settings = {"task": task, "model": "minilm", "output_dir": str(folder),
                "trainer": {"lr": lr, "epochs": 3, "seed": 42, "batch_size": 32}, **config}
    (folder / "config.yaml").write_text(yaml.safe_dump(settings))
    (folder / "run_info.json").write_text(json.dumps({"seed": 42}))
    lines = []
    for step in range(10, 31, 10):
        lines.append({"step": step, "epoch": step // 10 - 1, "loss": 1.0 / step, "lr": lr * (1 - step / 40),
                      "samples_per_second": 100.0 + step})
        evaluation = metrics[step // 10 - 1]
        lines.append({"step": step, "epoch": step // 10, "train_seconds": step * 1.5,
                      **{f"eval_{k}": v for k, v in evaluation.items()}, "eval_samples": 50, "eval_runtime": 0.5})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (folder / "eval_results.json").write_text(json.dumps({**metrics[-1], "eval_samples": 50, "step": 30}))
    (folder / "train_results.json").write_text(json.dumps({"train_runtime": 45.0, "train_samples": 960,
                                                           "train_samples_per_second": 21.3, "train_steps": 30,
                                                           "status": "completed"}))
    if predictions is not None:
        (folder / "predictions.jsonl").write_text("\n".join(json.dumps(p) for p in predictions) + "\n")
    return folder


def classification_runs(tmp_path: Path) -> list[Path]:
    gold = ["positive", "negative", "neutral"] * 10
    predicted = [g if i % 4 else "neutral" for i, g in enumerate(gold)]
    records = [{"text": f"t{i}", "label": g, "prediction": p, "score": 0.9} for i, (g, p) in enumerate(zip(gold, predicted))]
    return [write_run(tmp_path / name, "classification", [{"accuracy": a, "f1": a - 0.05} for a in accs], lr=lr,
                      predictions=records)
            for name, lr, accs in (("lr-1e-4", 1e-4, (0.6, 0.7, 0.75)), ("lr-3e-5", 3e-5, (0.5, 0.65, 0.72)))]


def test_a_classification_run_has_curves_and_a_confusion_matrix(tmp_path):
    run = classification_runs(tmp_path)[0]
    path = write_report([str(run)])
    assert path == str(run / "report.html")
    checker = check_page(run / "report.html")
    assert alts(checker) == ["confusion matrix of lr-1e-4 (30 evaluation examples)", "training loss against step",
                             "learning rate against step", "training samples per second against step",
                             "evaluation accuracy against step", "evaluation accuracy against training time",
                             "evaluation f1 against step", "evaluation f1 against training time"]
    text = " ".join(checker.text)
    assert "Settings that differ" not in text  # one run: nothing to compare
    assert "0.7500" in text and "completed" in text  # the final accuracy and the run's status


def test_several_runs_are_overlaid_and_only_differing_settings_are_listed(tmp_path):
    runs = classification_runs(tmp_path)
    out = tmp_path / "compare.html"
    checker = check_page(Path(write_report([str(r) for r in runs], str(out))))
    page = out.read_text()
    settings = page[page.index("Settings that differ"):page.index("Task views")]
    assert "trainer.lr" in settings and "trainer.seed" not in settings and "output_dir" not in settings
    assert alts(checker).count("training loss against step") == 1  # one figure, both runs' curves
    assert sum(a.startswith("confusion matrix of") for a in alts(checker)) == 2


def test_each_task_gets_its_own_view(tmp_path):
    ner = write_run(tmp_path / "ner", "ner", [{"f1": f, "precision": f, "recall": f, "f1_PER": f + 0.05,
                                                "f1_LOC": f - 0.05, "f1_ORG": f - 0.1} for f in (0.6, 0.7, 0.8)])
    translation = write_run(tmp_path / "translation", "translation", [{"bleu": b, "chrf": b + 10} for b in (5.0, 12.0, 20.0)])
    qa = write_run(tmp_path / "qa", "qa", [{"exact_match": e, "f1": e + 8} for e in (40.0, 55.0, 60.0)])
    checker = check_page(Path(write_report([str(ner), str(translation), str(qa)], str(tmp_path / "r.html"))))
    names = alts(checker)
    assert "entity-level F1 of each type (final evaluation)" in names
    assert "BLEU against training time" in names
    assert "exact match and F1 (final evaluation)" in names
    assert "evaluation f1_PER against step" not in names  # per-type F1 is shown once, as bars
    assert "evaluation bleu against training time" in names and "evaluation chrf against step" in names
    assert not any(a.startswith("confusion matrix") for a in names)  # no classification predictions here


def write_study(folder: Path) -> Path:
    folder.mkdir()
    (folder / "study.json").write_text(json.dumps({
        "config": {"task": "classification"}, "metric": "accuracy", "direction": "higher",
        "tune": {"space": {"trainer.lr": {"log_uniform": [1e-5, 1e-3]}, "trainer.epochs": {"choice": [2, 3]}},
                 "validation_fraction": 0.2, "seed": 0, "pruner": "median"}}))
    rows = [(0, "complete", 0.61, 2e-5, 2, ""), (1, "pruned", 0.52, 8e-4, 3, ""), (2, "complete", 0.68, 6e-5, 3, ""),
            (3, "fail", None, 1e-4, 2, "RuntimeError: out of memory"), (4, "complete", 0.66, 9e-5, 2, "")]
    with (folder / "trials.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["number", "state", "value", "trainer.lr", "trainer.epochs", "seconds", "pruned_at",
                         "retry_of", "interrupted", "error"])
        for n, state, value, lr, epochs, error in rows:
            writer.writerow([n, state, "" if value is None else value, lr, epochs, 10.0,
                             "240" if state == "pruned" else "", "", "", error])
    (folder / "importance.json").write_text(json.dumps({"method": "FanovaImportanceEvaluator",
                                                        "importance": {"trainer.lr": 0.8, "trainer.epochs": 0.2}}))
    (folder / "final.json").write_text(json.dumps({"best_trial": 2, "params": {"trainer.lr": 6e-5, "trainer.epochs": 3},
                                                   "validation": {"accuracy": 0.68}, "eval": {"accuracy": 0.655}}))
    write_run(folder / "trials" / "trial-0000", "classification", [{"accuracy": a} for a in (0.5, 0.58, 0.61)])
    write_run(folder / "best", "classification", [{"accuracy": a} for a in (0.6, 0.62, 0.655)])
    return folder


def test_a_study_folder_shows_the_trial_history_and_parameter_importance(tmp_path):
    study = write_study(tmp_path / "study")
    checker = check_page(Path(write_report([str(study)])))
    names = alts(checker)
    assert names[:5] == ["each trial's score on the validation split, and the best so far",
                         "parameter importance (FanovaImportanceEvaluator)", "trainer.lr against accuracy",
                         "trainer.epochs against accuracy", "accuracy of each trial at each evaluation"]
    assert "training loss against step" in names  # the retrained best run's own curves
    text = " ".join(checker.text)
    assert "RuntimeError: out of memory" in text and "pruned after 240 examples" in text
    assert "Best: trial 2, retrained on all of data.train" in text and "0.6550" in text


def test_a_cut_off_last_line_is_noted_and_a_bad_line_elsewhere_is_an_error(tmp_path):
    run = classification_runs(tmp_path)[0]
    log = run / "metrics.jsonl"
    log.write_text(log.read_text() + '{"step": 40, "lo')
    check_page(Path(write_report([str(run)])))
    assert "the last line (7) is cut off and was left out" in (run / "report.html").read_text()
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], "not json", *lines[1:]]))
    with pytest.raises(SFTError, match=r"metrics.jsonl line 2: not a JSON record"):
        write_report([str(run)])


def test_the_command_writes_the_page_and_refuses_a_folder_that_is_not_a_run(tmp_path):
    runs = classification_runs(tmp_path)
    out = tmp_path / "out" / "both.html"
    done = sft("report", runs[0], runs[1], "--output", out, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out) and out.stat().st_size > 10_000
    (tmp_path / "empty").mkdir()
    for target, message in ((tmp_path / "empty", "is not a run folder of sft"), (tmp_path / "missing", "no such folder")):
        bad = sft("report", target, timeout=120)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr


def test_an_instruct_run_shows_its_generations_and_leaves_flat_lines_out(tmp_path):
    """The instruct report plotted answer_tokens (a constant) as a curve, showed the training time as
    45.0000 and had no generation to read."""
    records = [{"source": "instruct", "prompt": f"What is {n} + {n}?", "generation": str(2 * n),
                "references": [str(2 * n)]} for n in range(14)]
    run = write_run(tmp_path / "chat", "instruct", [{"exact_match": e, "f1": e + 5, "answer_tokens": 12}
                                                    for e in (20.0, 35.0, 50.0)], predictions=records)
    checker = check_page(Path(write_report([str(run)])))
    names, text = alts(checker), " ".join(checker.text)
    assert "evaluation answer_tokens against step" not in names and "evaluation exact_match against step" in names
    assert "The same at every evaluation, so not plotted: answer_tokens 12." in text
    assert "Sample generations: chat (the first 10 of 14)" in text and "What is 9 + 9?" in text
    assert "What is 10 + 10?" not in text
    assert "45.0 s" in text and "45.0000" not in text


@pytest.mark.parametrize("seconds, shown", [(45.04, "45.0 s"), (185.4821, "3 min 05 s"), (3725.0, "1 h 02 min")])
def test_training_time_reads_as_a_duration(seconds, shown):
    from sft_core.commands.report.page import _duration

    assert _duration(seconds) == shown
