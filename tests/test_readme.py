"""The README's quick start and its chat-model section, walked as written, in order, on tiny models.

Every ``sft`` line of the two ``bash`` blocks runs through the console script in one working folder,
as a newcomer would type it. Only what cannot run here is changed, and said: the model (a tiny
random BERT or Llama instead of MiniLM or SmolLM2), a few training steps instead of the task's
budget, and the chat template the tiny Llama lacks. ``make demo`` is expanded into the commands it
runs (``make -n``); ``make test`` is this suite; the set-up lines are checked to be the ones the
Makefile offers. A changed README that no longer runs fails here.
"""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
from pathlib import Path

import pytest

from helpers import Terminal, free_port, ok, sft, sft_env, wait_ready

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SET_UP = {"make setup", "make setup-llm", "source .venv/bin/activate", "make test"}


def bash_block(heading: str) -> list[str]:
    """The command lines of the first ```bash block under ``## heading``, comments removed."""
    text = README.read_text(encoding="utf-8")
    section = text.split(f"\n## {heading}\n", 1)
    assert len(section) == 2, f"README.md has no '## {heading}' section"
    block = re.search(r"```bash\n(.*?)```", section[1].split("\n## ", 1)[0], flags=re.S)
    assert block, f"README.md '## {heading}' has no bash block"
    return command_lines(block.group(1))


def command_lines(block: str) -> list[list[str]]:
    lines = []
    for line in block.replace("\\\n", " ").splitlines():  # a line continued with a backslash is one command
        command = shlex.split(line, comments=True)
        if command:
            lines.append(command)
    return lines


def make_commands(target: str) -> list[list[str]]:
    """The sft commands ``make TARGET`` runs (its set-up steps aside)."""
    done = ok(subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True, env=sft_env()))
    return [shlex.split(line) for line in done.stdout.splitlines() if re.match(r"\S*bin/sft ", line)]


def adapted(command: list[str], tiny_model: str, tiny_llama: str) -> list[str]:
    """``command`` (``sft ...``) as it runs here: tiny models, a short budget."""
    args = [tiny_llama if a == "smollm2" else a for a in command[1:]]
    llm = "instruct" in args or any("chat" in a for a in args)
    if args[0] == "run" and "--model" not in args:
        args += ["--model", tiny_llama if llm else tiny_model]
    if args[0] == "run":
        args += ["trainer.max_steps=4", "trainer.save_every=0"]
    if llm and args[0] in ("run", "eval"):
        args += ["instruct.chat_template=chatml", "instruct.max_new_tokens=4"]
    if llm and args[0] == "run":
        args += ["peft.method=none"]  # LoRA's default target names do not fit the tiny Llama's layout
    return args


def test_quick_start_as_written(tmp_path, tiny_model, tiny_llama):
    lines = [" ".join(c) for c in bash_block("Quick start")]
    assert lines == ["make demo", "make test"], lines  # two commands: the main job, then the tests
    assert "make test" in Path(ROOT / ".ci" / "run").read_text()  # CI runs the README's test command
    demo = make_commands("demo")
    assert [c[1] for c in demo] == ["run", "predict"], demo
    run = ok(sft(*adapted(["sft", *demo[0][1:]], tiny_model, tiny_llama), cwd=tmp_path))
    assert json.loads(run.stdout)["output_dir"] == "runs/classification"
    predicted = ok(sft(*adapted(["sft", *demo[1][1:]], tiny_model, tiny_llama), cwd=tmp_path)).stdout.splitlines()
    assert [json.loads(p)["text"] for p in predicted] == demo[1][4:]
    assert all(json.loads(p)["prediction"] in ("negative", "positive") for p in predicted)


def test_the_chat_model_section_as_written(tmp_path, tiny_model, tiny_llama):
    walked = walk(bash_block("Fine-tune a chat model"), "README", tmp_path, tiny_model, tiny_llama)
    assert [args[0] for args, _ in walked] == ["eval", "run", "chat", "predict", "serve", "export"], walked
    (predicted,) = [done for args, done in walked if args[0] == "predict"]
    (record,) = [json.loads(line) for line in predicted.stdout.splitlines()]
    assert record["prompt"] == "What is the capital of Peru?" and isinstance(record["generation"], str)


def walk(commands: list[list[str]], page: str, cwd: Path, tiny_model: str, tiny_llama: str) -> list[tuple]:
    """Runs ``commands`` (a page's bash lines) in order in ``cwd``: (args, completed process) of each
    ``sft`` command. Set-up lines are checked against the Makefile, curl lines are the serve step's
    (which asks its own question); chat types one question on a terminal, serve answers one request."""
    walked = []
    for command in commands:
        line = " ".join(command)
        if line in SET_UP:
            assert line.split()[0] != "make" or f"\n{line.split()[1]}:" in (ROOT / "Makefile").read_text()
            continue
        if command[0] == "curl":
            continue
        assert command[0] == "sft", f"{page}: {line!r} is neither a set-up step nor an sft command"
        args = adapted([c for c in command if c != "&"], tiny_model, tiny_llama)
        done = None
        if args[0] == "chat":
            terminal = Terminal([*sft.command, *args], sft_env(), cwd=cwd)
            try:
                terminal.read_until("> ")
                start = len(terminal.shown)
                terminal.type("What is the capital of Peru?")
                terminal.read_until("\n> ", start)
                terminal.type("/exit")
            finally:
                code = terminal.close()
            assert code == 0 and "Traceback" not in terminal.shown, terminal.shown
        elif args[0] == "serve":
            _serve_and_chat(args, cwd)
        elif args[0] == "export":  # both walked pages train a chat model: exported to GGUF, verified
            done = ok(sft(*args, cwd=cwd))
            report = json.loads(done.stdout)
            folder = cwd / report["output"]
            assert report["format"] == "gguf" and (folder / report["file"]).is_file(), report
            assert (folder / "Modelfile").is_file() and report["verification"]["template"]["identical_ids"]
        else:
            done = ok(sft(*args, cwd=cwd))
        walked.append((args, done))
    return walked


def _serve_and_chat(args: list[str], cwd: Path) -> None:
    """``sft serve`` as written (its port moved to a free one): a chat completion, then SIGTERM."""
    import httpx

    port = free_port()
    process = subprocess.Popen([*sft.command, *args, "--port", str(port)], cwd=cwd, env=sft_env(PYTHONUNBUFFERED="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, url)
        answer = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "chat", "max_tokens": 4, "messages": [{"role": "user", "content": "What is the capital of Peru?"}]})
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["role"] == "assistant"
    assert process.returncode == 0, output


@pytest.mark.parametrize("heading", ["Quick start", "Fine-tune a chat model"])
def test_every_sft_line_of_the_walked_blocks_is_a_known_command(heading):
    listed = ok(sft("--help")).stdout.split("Commands:", 1)[1]
    known = set(re.findall(r"^  ([a-z][a-z-]*)\s", listed, flags=re.M))
    for command in bash_block(heading):
        if command[0] == "sft":
            assert command[1] in known, command


WALKTHROUGH = ROOT / "docs" / "guide" / "first-chat-model.md"


def test_the_readme_quick_start_links_the_chat_model_walkthrough():
    quick_start = README.read_text(encoding="utf-8").split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/guide/first-chat-model.md)" in quick_start  # one click from the quick start


def test_the_chat_model_walkthrough_as_written(tmp_path, tiny_model, tiny_llama):
    """docs/guide/first-chat-model.md, every bash block in order, on its own example files (copied
    as the page's paths name them), the model a tiny Llama as in the README's walk."""
    import shutil

    shutil.copytree(ROOT / "docs" / "examples", tmp_path / "docs" / "examples")
    blocks = re.findall(r"```bash\n(.*?)```", WALKTHROUGH.read_text(encoding="utf-8"), flags=re.S)
    commands = [c for block in blocks for c in command_lines(block)]
    walked = walk(commands, WALKTHROUGH.name, tmp_path, tiny_model, tiny_llama)
    assert [args[0] for args, _ in walked] == ["eval", "run", "chat", "predict", "eval", "serve", "report", "export"]
    assert (tmp_path / "runs" / "lumo" / "report.html").is_file()
    assert (tmp_path / "runs" / "lumo" / "eval-lumo-eval" / "eval_results.json").is_file()
