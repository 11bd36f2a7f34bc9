"""End to end through the ``sft`` console script: run, eval, predict, and the errors a user sees."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from helpers import SAMPLE, invoke, sft, sft_env

EVAL_SAMPLE = SAMPLE / "eval.jsonl"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # with the suite's plugin selection: the built-in tasks only (conftest.py)
    return sft_env(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                   SFT_CACHE_DIR=str(tmp_path_factory.mktemp("cli-cache")))


def sft_many(env, commands: dict[str, list], cwd) -> dict[str, subprocess.CompletedProcess]:
    """Run independent commands two at a time (CPU-bound imports, 2 cores) and return them by name."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(sft, *args, env=env, cwd=cwd, timeout=300) for name, args in commands.items()}
        return {name: future.result() for name, future in futures.items()}


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- a trained run, then eval and predict on its model -------------------------------------------

@pytest.fixture(scope="module")
def trained(env, tiny_model, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("cli-run") / "run"
    done = ok(sft("run", "--task", "classification", "--model", tiny_model, "--output-dir", run_dir,
                  "trainer.max_steps=3", "trainer.lr=1e-3", env=env, cwd=run_dir.parent, timeout=300))
    summary = json.loads(done.stdout)
    assert summary["output_dir"] == str(run_dir) and summary["train_steps"] == 3
    return run_dir


@pytest.fixture(scope="module")
def used(env, trained, tmp_path_factory) -> dict:
    """``sft eval`` and ``sft predict`` on the trained model, run side by side."""
    work = tmp_path_factory.mktemp("cli-use")
    model = trained / "model"
    return {"work": work, **sft_many(env, {
        "eval": ["eval", "--model", model, "--data", EVAL_SAMPLE, "--output-dir", work / "eval"],
        "predict": ["predict", "--model", model, "great film", "awful food"],
    }, cwd=work)}


def test_run_writes_resolved_config(trained, tiny_model):
    config = yaml.safe_load((trained / "config.yaml").read_text())
    assert config["task"] == "classification" and config["model"] == tiny_model
    assert config["trainer"]["lr"] == 0.001 and isinstance(config["trainer"]["lr"], float)
    assert config["trainer"]["max_steps"] == 3
    assert config["trainer"]["batch_size"] == 32  # the defaults are written out too: the run is reproducible
    assert config["output_dir"] == str(trained)


def test_run_writes_metrics_log(trained):
    records = json_lines((trained / "metrics.jsonl").read_text())
    assert any("loss" in r and r["step"] >= 1 for r in records)
    evals = [r for r in records if "eval_accuracy" in r]
    assert evals and evals[-1]["step"] == 3 and evals[-1]["eval_samples"] == 60


def test_run_writes_train_and_eval_results(trained):
    train = json.loads((trained / "train_results.json").read_text())
    assert {"train_runtime", "train_samples", "train_samples_per_second", "train_steps"} <= train.keys()
    assert train["train_steps"] == 3 and train["train_samples"] == 3 * 32
    assert train["train_samples_per_second"] > 0
    results = json.loads((trained / "eval_results.json").read_text())
    for key in ("accuracy", "f1", "matthews_correlation"):
        assert isinstance(results[key], float), key
    assert results["eval_samples"] == 60
    # F1 (of "positive") and the Matthews correlation, recomputed from the written predictions
    from sklearn import metrics as skm

    predictions = json_lines((trained / "predictions.jsonl").read_text())
    gold, pred = [p["label"] == "positive" for p in predictions], [p["prediction"] == "positive" for p in predictions]
    assert results["f1"] == pytest.approx(skm.f1_score(gold, pred, zero_division=0))
    assert results["matthews_correlation"] == pytest.approx(skm.matthews_corrcoef(gold, pred))


def test_run_writes_predictions_and_model(trained):
    predictions = json_lines((trained / "predictions.jsonl").read_text())
    assert len(predictions) == 60
    gold = json_lines(EVAL_SAMPLE.read_text())
    assert [p["text"] for p in predictions] == [g["sentence"] for g in gold]  # in input order
    assert {p["prediction"] for p in predictions} <= {"negative", "positive"}
    accuracy = sum(p["prediction"] == p["label"] for p in predictions) / 60
    assert accuracy == pytest.approx(json.loads((trained / "eval_results.json").read_text())["accuracy"])
    info = json.loads((trained / "model" / "sft_task.json").read_text())
    assert info["task"] == "classification" and info["state"]["labels"] == ["negative", "positive"]
    assert (trained / "model" / "config.json").is_file() and (trained / "model" / "model.safetensors").is_file()


def test_eval_reproduces_the_run_metrics(trained, used):
    ok(used["eval"])
    written = json.loads((used["work"] / "eval" / "eval_results.json").read_text())
    original = json.loads((trained / "eval_results.json").read_text())
    assert written["accuracy"] == pytest.approx(original["accuracy"])
    assert written["f1"] == pytest.approx(original["f1"])
    assert json.loads(used["eval"].stdout)["accuracy"] == written["accuracy"]
    assert len((used["work"] / "eval" / "predictions.jsonl").read_text().splitlines()) == 60


def test_predict_texts(used):
    records = json_lines(ok(used["predict"]).stdout)
    assert [r["text"] for r in records] == ["great film", "awful food"]
    for record in records:
        assert record["prediction"] in ("negative", "positive")
        assert 0.5 <= record["score"] <= 1.0  # the winning class of two


def test_predict_input_file(trained, tmp_path):
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("a warm and funny film\nthe soup was cold and the waiter rude\nfine\n", encoding="utf-8")
    result = invoke("predict", "--model", trained / "model", "--input", inputs)
    assert result.exit_code == 0 and result.exception is None, result.output
    records = json_lines(result.stdout)
    assert [r["text"] for r in records] == ["a warm and funny film", "the soup was cold and the waiter rude", "fine"]
    assert all(r["prediction"] in ("negative", "positive") and 0.5 <= r["score"] <= 1.0 for r in records)


# --- bad input: one line, "error: ...", non-zero exit, no traceback ----------------------------

BAD_INPUT = {
    # name: (arguments after `sft`, text the error line must contain)
    "missing_train_file": (["run", "--task", "classification", "--train", "no_such_train.tsv"],
                           ["data file not found: no_such_train.tsv"]),
    "wrong_column": (["run", "--task", "classification", "data.text_column=nope"],
                     ["no column 'nope'", "data.text_column", "sentence, label"]),
    "empty_file": (["run", "--task", "classification", "--train", "empty.tsv"], ["empty.tsv", "no examples"]),
    "malformed_row": (["run", "--task", "classification", "--train", "malformed.tsv"],
                      ["malformed.tsv line 3", "3 fields, expected 2"]),
    "unknown_task": (["run", "--task", "sentiment"], ["unknown task 'sentiment'", "known tasks: ", "classification"]),
    "model_not_found": (["run", "--task", "classification", "--model", "./no/such/dir"],
                        ["model folder not found", "no/such/dir"]),
    "invalid_value": (["run", "--task", "classification", "trainer.lr=abc"],
                      ["invalid value for trainer.lr", "'abc'", "expected float"]),
    "unknown_key": (["run", "--task", "classification", "trainer.lrr=1e-3"],
                    ["unknown config key 'trainer.lrr'", "did you mean 'trainer.lr'"]),
    "predict_nothing": (["predict", "--model", "TINY"], ["nothing to predict"]),
    "eval_model_not_found": (["eval", "--model", "./no/such/dir", "--data", str(EVAL_SAMPLE)],
                             ["model folder not found: no/such/dir"]),
    "eval_not_an_sft_model": (["eval", "--model", "TINY", "--data", str(EVAL_SAMPLE)],
                              ["was not written by sft (no sft_task.json)"]),
}
# Every console-script call that gets past the config imports torch and transformers (~4 s of CPU
# each on these machines), so the cases failing there in the same way run in-process through the
# same click group; the subprocess ones prove that no library noise reaches stderr on that path.
IN_PROCESS = {"wrong_column", "empty_file", "malformed_row", "eval_model_not_found", "eval_not_an_sft_model"}


@pytest.fixture(scope="module")
def bad_work(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("cli-bad")
    (work / "empty.tsv").write_text("", encoding="utf-8")
    (work / "malformed.tsv").write_text("sentence\tlabel\ngood film\t1\nbad\tfilm\t0\n", encoding="utf-8")
    return work


def bad_args(name: str, tiny_model: str, work: Path) -> list[str]:
    args = [tiny_model if a == "TINY" else a for a in BAD_INPUT[name][0]]
    if args[0] == "run":
        args += ["--output-dir", str(work / "out" / name)]
        if "--model" not in args:
            args += ["--model", tiny_model]
    return args


@pytest.fixture(scope="module")
def bad_runs(env, tiny_model, bad_work) -> dict[str, subprocess.CompletedProcess]:
    commands = {name: bad_args(name, tiny_model, bad_work) for name in BAD_INPUT if name not in IN_PROCESS}
    return sft_many(env, commands, cwd=bad_work)


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_is_one_clear_line(request, tiny_model, bad_work, monkeypatch, name):
    if name in IN_PROCESS:
        monkeypatch.chdir(bad_work)
        result = invoke(*bad_args(name, tiny_model, bad_work))
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
        code, stdout, stderr = result.exit_code, result.stdout, result.stderr
    else:
        done = request.getfixturevalue("bad_runs")[name]
        code, stdout, stderr = done.returncode, done.stdout, done.stderr
    assert code != 0
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), lines[0]
    for part in BAD_INPUT[name][1]:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    assert stdout == ""
    assert not (bad_work / "out" / name / "model").exists()


def test_eval_with_unknown_label(trained, tmp_path):
    data = tmp_path / "dev.csv"
    data.write_text("text,label\nnice,positive\nso-so,neutral\n", encoding="utf-8")
    result = invoke("eval", "--model", trained / "model", "--data", data, "--output-dir", tmp_path / "out")
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.stderr.strip() == (f"error: {data} line 3: label 'neutral' never seen in training "
                                     "(known labels: negative, positive)")
    assert not (tmp_path / "out").exists()
