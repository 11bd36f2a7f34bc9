"""Every ``sft`` command as a user runs it: through the console script, in a subprocess, on tiny models.

The other test modules call most of the code behind the commands in-process, which cannot see what
breaks between the command line and that code (an import a refactor removed, a console-script entry
point, a terminal). Here each command the installed ``sft`` offers is started once as a user would,
and ``test_every_command_is_walked`` fails when a command appears that this module does not start.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SAMPLE, Terminal, free_port, invoke, json_lines, ok, sft, sft_env, wait_ready

ROOT = Path(__file__).resolve().parents[1]

#: command -> the test below that starts it through the console script
WALKED = {
    "run": "test_run_eval_predict", "eval": "test_run_eval_predict", "predict": "test_run_eval_predict",
    "chat": "test_chat_in_a_terminal", "serve": "test_serve_answers_what_predict_prints",
    "export": "test_export_then_predict_from_the_exported_folder", "tune": "test_tune_a_two_trial_study",
    "report": "test_report_of_a_run", "bench": "test_bench_lists_and_runs_a_recipe",
    "new-task": "test_new_task_writes_a_package", "tasks": "test_tasks_and_plugins",
    "plugins": "test_tasks_and_plugins",
}


def test_every_command_is_walked():
    """The commands ``sft --help`` lists (core and plugin commands) are exactly those walked here."""
    done = ok(sft("--help"))
    listed = set(re.findall(r"^  ([a-z][a-z-]*)\s", done.stdout.split("Commands:", 1)[1], flags=re.M))
    assert listed == set(WALKED), f"not walked: {sorted(listed - set(WALKED))}; gone: {sorted(set(WALKED) - listed)}"
    module = sys.modules[__name__]
    assert all(callable(getattr(module, name, None)) for name in WALKED.values())


def test_version_and_module_entry_point():
    assert re.fullmatch(r"sft, version \S+\n", ok(sft("--version")).stdout)
    done = ok(subprocess.run([sys.executable, "-m", "sft_core", "tasks"], capture_output=True, text=True,
                             env=sft_env(), timeout=300))
    assert "classification" in done.stdout


# --- a classification run, its model evaluated, predicted, reported, exported, served -----------

@pytest.fixture(scope="module")
def classifier(tiny_model, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("commands") / "run"
    done = ok(sft("run", "--task", "classification", "--model", tiny_model, "--output-dir", run,
                  "trainer.max_steps=6", "trainer.lr=1e-3", "trainer.eval_every=3"))
    assert json.loads(done.stdout)["train_steps"] == 6
    # the budget before training, with where the settings came from
    assert re.search(r"^training: \d+ examples \([\d,]+ tokens\); .* = 6 optimizer steps of \d+$", done.stderr, flags=re.M)
    assert "trainer.lr 0.001 (your setting)" in done.stderr and "trainer.batch_size 32 (sft's default)" in done.stderr
    # each evaluation's figures as it ends, then where the model is and what to do with it
    assert re.search(r"^evaluation at step 3 \(epoch 0\.\d+\): accuracy [\d.]+, ", done.stderr, flags=re.M), done.stderr
    assert f"the model is in {run / 'model'}; next:" in done.stderr
    assert f"sft export --model {run / 'model'}" in done.stderr and "sft chat" not in done.stderr
    return run


def test_run_eval_predict(classifier, tmp_path):
    results = json.loads((classifier / "eval_results.json").read_text())
    shown = {k: v for k, v in sft_env().items() if k != "TQDM_DISABLE"}  # progress bars on, as for a user
    evaluated = ok(sft("eval", "--model", classifier / "model", "--data", SAMPLE / "eval.jsonl",
                       "--output-dir", tmp_path / "eval", env=shown))
    assert json.loads(evaluated.stdout)["accuracy"] == pytest.approx(results["accuracy"])
    assert "evaluating 60 examples" in evaluated.stderr  # its own progress (it froze with no word)
    predicted = json_lines(ok(sft("predict", "--model", classifier / "model", "great film", "awful food")).stdout)
    assert [p["text"] for p in predicted] == ["great film", "awful food"]
    assert {p["prediction"] for p in predicted} <= {"negative", "positive"}


def test_each_data_file_keeps_its_own_evaluation(classifier, tmp_path):
    """sft eval without --output-dir wrote every data file's results to RUN/eval, each evaluation
    silently replacing the one before; now one folder per data file, named after it."""
    rows = (SAMPLE / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    files = {tmp_path / "a" / "dev.jsonl": rows[:10], tmp_path / "b" / "dev.jsonl": rows[10:30],
             tmp_path / "held-out.jsonl": rows[30:45]}
    for path, lines in files.items():
        path.parent.mkdir(exist_ok=True)
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outputs = [invoke("eval", "--model", classifier / "model", "--data", path) for path in [*files, *files][:4]]
    assert all(r.exit_code == 0 for r in outputs), [r.output for r in outputs]
    folders = {"eval-dev": 10, "eval-dev-2": 20, "eval-held-out": 15}
    for name, count in folders.items():
        assert json.loads((classifier / name / "eval_results.json").read_text())["eval_samples"] == count
    assert f"written to {classifier / 'eval-dev'}\n" in outputs[0].output
    assert f"written to {classifier / 'eval-dev'} (replacing its earlier evaluation of the same data)" in outputs[3].output
    assert json.loads((classifier / "eval-dev-2" / "evaluated.json").read_text())["data"] == str(tmp_path / "b" / "dev.jsonl")


def test_report_of_a_run(classifier, tmp_path):
    ok(sft("report", classifier, "--output", tmp_path / "report.html"))
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "data:image/png;base64," in page


def test_export_then_predict_from_the_exported_folder(classifier, tmp_path):
    """Without --output (once "Missing option '--output'"), the export lands beside the model, as sft eval's."""
    done = ok(sft("export", "--model", classifier / "model"))
    exported = classifier / "onnx"
    assert json.loads(done.stdout)["output"] == str(exported) and (exported / "model.onnx").is_file()
    texts = ["a warm and funny film", "the soup was cold"]
    torch_records = json_lines(ok(sft("predict", "--model", classifier / "model", *texts)).stdout)
    onnx_records = json_lines(ok(sft("predict", "--model", exported, *texts)).stdout)
    assert [r["prediction"] for r in onnx_records] == [r["prediction"] for r in torch_records]
    for a, b in zip(onnx_records, torch_records):
        assert a["score"] == pytest.approx(b["score"], abs=1e-4)


def test_serve_answers_what_predict_prints(classifier):
    import httpx

    texts = ["great film", "awful food", "a long and slow but rewarding story"]
    expected = json_lines(ok(sft("predict", "--model", classifier / "model", *texts)).stdout)
    port = free_port()
    process = subprocess.Popen([*sft.command, "serve", "--model", str(classifier / "model"), "--port", str(port)],
                               env=sft_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        response = httpx.post(f"{url}/predict", json={"inputs": texts}, timeout=120)
        bad = httpx.post(f"{url}/predict", json={"inputs": "not a list"}, timeout=120)
        health = httpx.get(f"{url}/health", timeout=120)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
    for g, e in zip(got, expected):
        assert g["score"] == pytest.approx(e["score"], abs=1e-5)
    assert bad.status_code == 422 and health.status_code == 200  # a bad request, and it keeps serving
    assert process.returncode == 0, output
    # uvicorn's "running" comes before the model is loaded: the server says when it can answer
    assert re.search(rf"sft serve: \S+ loaded in [\d.]+ s; ready on http://127.0.0.1:{port} ", output), output


# --- tune, bench, new-task, tasks, plugins ----------------------------------------------------

def test_tune_a_two_trial_study(tiny_model, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(json.dumps({
        "task": "classification", "model": tiny_model, "output_dir": str(tmp_path / "run"),
        "data": {"eval": str(SAMPLE / "eval.jsonl")}, "trainer": {"max_steps": 2, "save_every": 0, "eval_every": 0},
        "tune": {"trials": 2, "validation_fraction": 0.2, "space": {"trainer.lr": {"log_uniform": [1e-4, 1e-2]}}},
    }), encoding="utf-8")
    ok(sft("tune", "--config", recipe, "--study-dir", tmp_path / "study"))
    study = tmp_path / "study"
    assert len((study / "trials.csv").read_text().splitlines()) == 3  # a header and two trials
    assert (study / "best.yaml").is_file() and (study / "report.html").is_file()


def test_bench_lists_and_runs_a_recipe(tiny_model, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.yaml").write_text(json.dumps({
        "task": "classification", "model": tiny_model, "trainer": {"max_steps": 2, "save_every": 0},
        "bench": {"suites": ["smoke"], "metrics": ["accuracy"], "budget": "2 steps"},
    }), encoding="utf-8")
    listed = ok(sft("bench", "--list", "--recipes-dir", recipes)).stdout
    assert "tiny" in listed and "smoke" in listed
    data = tmp_path / "data"
    data.mkdir()
    ok(sft("bench", "tiny", "--recipes-dir", recipes, "--data-dir", data, "--output", tmp_path / "bench"))
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [r["recipe"] for r in results["results"]] == ["tiny"] and results["results"][0]["status"] == "ok"


def test_new_task_writes_a_package(tmp_path):
    ok(sft("new-task", "sentiment-demo", "--dir", tmp_path))
    package = tmp_path / "sft-sentiment-demo"
    assert (package / "pyproject.toml").is_file() and (package / "sft_sentiment_demo" / "task.py").is_file()


def test_tasks_and_plugins():
    listed = ok(sft("tasks")).stdout
    for task in ("classification", "ner", "qa", "translation", "instruct"):
        assert re.search(rf"^{task}\s", listed, flags=re.M), listed
    plugins = ok(sft("plugins")).stdout
    assert plugins.startswith("sft-core ") and "FAILED" not in plugins
    assert re.search(r"^instruct\s.*sft_register_commands", plugins, flags=re.M), plugins


# --- the LLM path: an instruct run, then sft chat in a terminal ---------------------------------

QA = [("what is the colour of the cat", "red"), ("what is the colour of the dog", "blue"),
      ("what sat on the mat", "the cat sat"), ("is the dog blue", "yes"), ("is the cat blue", "no"),
      ("what ran", "the dog ran on a mat")]


@pytest.fixture(scope="module")
def chat_model(tiny_llama, tmp_path_factory) -> Path:
    """A tiny Llama that ``sft run --task instruct`` taught to answer QA exactly."""
    work = tmp_path_factory.mktemp("instruct")
    data = work / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": q, "completion": a}) + "\n" for q, a in QA), encoding="utf-8")
    done = ok(sft("run", "--task", "instruct", "--model", tiny_llama, "--train", data, "--eval", data,
           "--output-dir", work / "run", "instruct.chat_template=chatml", "peft.method=none", "trainer.batch_size=6",
           "trainer.max_steps=150", "trainer.lr=1e-2", "trainer.warmup_ratio=0", "trainer.eval_every=0",
           "trainer.save_every=0", "trainer.max_length=64"))
    assert json.loads((work / "run" / "eval_results.json").read_text())["exact_match"] == 100.0
    assert f"sft chat --model {work / 'run' / 'model'}" in done.stderr and "sft export" not in done.stderr
    return work / "run" / "model"


def test_chat_in_a_terminal(chat_model):
    terminal = Terminal([*sft.command, "chat", "--model", str(chat_model)], sft_env())
    try:
        terminal.read_until("> ")
        start = len(terminal.shown)
        terminal.type(QA[0][0])
        answer = terminal.read_until("\n> ", start)
        start = len(terminal.shown)
        terminal.type("/reset")  # the model learnt single questions: ask the next one in a new conversation
        assert "(new conversation)" in terminal.read_until("\n> ", start)
        start = len(terminal.shown)
        terminal.type(QA[4][0])
        second = terminal.read_until("\n> ", start)
        start = len(terminal.shown)
        terminal.type("/reset")
        terminal.read_until("\n> ", start)
        start = len(terminal.shown)
        terminal.type("\x1b[A" * 4)  # the up arrow, four times: back past /reset, the question, /reset to the first
        recalled = terminal.read_until("\n> ", start)
        terminal.type("/exit")
    finally:
        code = terminal.close()
    assert code == 0, terminal.shown
    # the terminal echoes the typed line, the streamed answer follows on its own line, then the prompt
    shown = lambda text: [line.strip() for line in text.replace("\r", "").splitlines()]  # noqa: E731
    assert shown(answer) == [QA[0][0], QA[0][1], ">"], answer
    assert shown(second) == [QA[4][0], QA[4][1], ">"], second
    assert QA[0][1] in shown(recalled), recalled  # line editing and history (the arrows printed ^[[A)
    assert "Traceback" not in terminal.shown


def test_ctrl_c_stops_an_answer_not_the_chat(chat_model, monkeypatch):
    """Ctrl-C during an answer stops it and returns to the prompt, the words so far kept in the
    conversation; at the prompt it leaves quietly (it exited with the training message about
    checkpoints and --resume)."""
    import sft_core.engine as engine
    from sft_core.host.manager import PluginHost
    from sft_instruct.chat import chat_session

    real = engine.prepare_for_inference

    def interrupted_answers(*args, **kwargs):
        task, tokenizer, model = real(*args, **kwargs)

        def generate(model, ids, mask, max_new_tokens, streamer):
            streamer.on_finalized_text("the cat")  # the words streamed before the key was pressed
            raise KeyboardInterrupt

        task.generate = generate
        return task, tokenizer, model

    monkeypatch.setattr(engine, "prepare_for_inference", interrupted_answers)
    typed, shown = iter([QA[2][0]]), []

    def read(prompt):
        shown.append(prompt)
        line = next(typed, None)
        if line is None:
            raise KeyboardInterrupt  # Ctrl-C at the prompt
        return line

    try:
        messages = chat_session(str(chat_model), PluginHost(), read=read, write=shown.append)
    except KeyboardInterrupt:  # as a failure of this test, not an interrupt of the whole test session
        pytest.fail("Ctrl-C ended the chat: " + "".join(shown))
    assert messages[-2:] == [{"role": "user", "content": QA[2][0]}, {"role": "assistant", "content": "the cat"}]
    assert "".join(shown).endswith("the cat\n(answer stopped)\n> \n") and "resume" not in "".join(shown)


def test_predict_a_txt_file_of_prompts(chat_model, tmp_path):
    """`sft predict --input prompts.txt`: one prompt a line, as the docs say of .txt inputs (it was read
    as JSON lines: "line 1: invalid JSON"); a byte-order mark and blank lines are no prompts."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(f"\ufeff{QA[0][0]}\n\n{QA[3][0]}\n", encoding="utf-8")
    done = ok(sft("predict", "--model", chat_model, "--input", prompts))
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["prompt"], r["generation"]) for r in records] == [QA[0], QA[3]]


@pytest.mark.parametrize("model, format, quantize, expected", [
    ("runs/sst2/model", "onnx", None, "runs/sst2/onnx"), ("runs/sst2/model/", "onnx", "int8", "runs/sst2/onnx-int8"),
    ("my-model", "onnx", None, "my-model-onnx"), ("/abs/best", "onnx", "int8", "/abs/best-onnx-int8"),
    ("runs/chat/model", "gguf", None, "runs/chat/gguf-f16"), ("runs/chat/model", "gguf", "q8_0", "runs/chat/gguf-q8_0"),
    ("smollm2", "gguf", "q4_0", "smollm2-gguf-q4_0"),
])
def test_the_export_folder_defaults_beside_the_model(model, format, quantize, expected):
    from sft_core.engine.export import default_output

    assert default_output(model, format, quantize) == expected
