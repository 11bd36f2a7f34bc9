"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

from sft_core.config import build_config
from sft_core.host.manager import PluginHost

SAMPLE = Path(__file__).resolve().parents[1] / "plugins" / "sft_classification" / "sample_data"


def _console_script() -> list[str]:
    """The installed ``sft`` console script beside this interpreter (what ``pip install`` put there)."""
    found = shutil.which("sft", path=str(Path(sys.executable).parent))
    if found is None:
        raise RuntimeError(f"no `sft` console script beside {sys.executable}: install sft (make setup)")
    return [found]


def sft_env(**extra: str) -> dict[str, str]:
    """The environment of a command a test starts: the suite's (offline, built-in plugins only) and ``extra``."""
    return {**os.environ, "TQDM_DISABLE": "1", **extra}


def sft(*args, env: dict | None = None, cwd=None, timeout: float = 600, check: bool = False) -> subprocess.CompletedProcess:
    """``sft ARGS...`` through the console script, as a user runs it; its output captured as text."""
    done = subprocess.run([*sft.command, *map(str, args)], capture_output=True, text=True, env=env or sft_env(),
                          cwd=cwd, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"sft {' '.join(map(str, args))}: exit {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


sft.command = _console_script()


def invoke(*args, host: PluginHost | None = None):
    """``sft ARGS...`` in-process through click's test runner (cheaper than a subprocess once torch is
    imported), with ``host`` (default: a fresh one with the built-in tasks) and its plugins' commands."""
    from click.testing import CliRunner

    from sft_core.commands.cli import cli

    host = host if host is not None else PluginHost()
    host.register_commands(cli)
    return CliRunner().invoke(cli, [str(a) for a in args], obj=host)


def make_config(host: PluginHost, task: str = "classification", **values):
    """A resolved RunConfig from flat dotted keys, e.g. make_config(host, **{"trainer.lr": 1e-3})."""
    return build_config(host.get_task(task), [("test", values)])


def train_tiny(tmp_path: Path, model: str, extra_plugins=(), resume=False, **values) -> dict:
    from sft_core import engine

    host = PluginHost(extra_plugins=tuple(extra_plugins))
    defaults = {"model": model, "output_dir": str(tmp_path), "trainer.lr": 1e-3, "trainer.batch_size": 16,
                "trainer.eval_batch_size": 16}
    config = make_config(host, **{**defaults, **values})
    return engine.train(config, host, resume=resume)


def install_distribution(monkeypatch, folder: Path, distribution: str, entry_point: str, source: str) -> None:
    """A distribution with one ``sft`` entry point (module ``source``), installed in ``folder`` as pip
    would (a module and its .dist-info) and put on the path, here and in subprocesses."""
    import os

    module = distribution.replace("-", "_")
    (folder / f"{module}.py").write_text(source)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[sft]\n{entry_point} = {module}\n")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, (str(folder), os.environ.get("PYTHONPATH")))))


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# --- constructed data that a tiny model can learn exactly -------------------------------------

NEUTRAL = ("the film was seen by many people in the city on a rainy day with friends and "
           "family after work before dinner near home").split()
POSITIVE = ("great", "superb", "lovely", "wonderful")
NEGATIVE = ("awful", "boring", "dreadful", "terrible")
PEOPLE = ("Anna", "Boris", "Carla", "David", "Elena")
PLACES = ("Paris", "Berlin", "Oslo", "Madrid", "Vienna")


def _write_splits(folder: Path, extension: str, counts: tuple[int, int], seed: int, record, separator: str):
    """train and eval files of ``record(rng, i)`` texts (one random stream for both, train first)."""
    import random

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, n in zip(("train", "eval"), counts):
        path = folder / f"{name}.{extension}"
        path.write_text(separator.join(record(rng, i) for i in range(n)) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def write_cue_classification(folder: Path, n_train: int = 160, n_eval: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """JSONL sentences whose label is set by one cue word at a random position (positive/negative)."""
    import json

    def sentence(rng, i: int) -> str:
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.choices(NEUTRAL, k=rng.randint(3, 8))
        words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        return json.dumps({"sentence": " ".join(words), "label": label})

    return _write_splits(folder, "jsonl", (n_train, n_eval), seed, sentence, "\n")


def write_name_ner(folder: Path, n_train: int = 160, n_eval: int = 40, seed: int = 0) -> tuple[Path, Path]:
    """CoNLL sentences in which people and places (one word, or "New York") are the entities."""
    def sentence(rng, i: int) -> str:
        rows = [(w, "O") for w in rng.choices(NEUTRAL, k=rng.randint(3, 7))]
        for _ in range(rng.randint(1, 2)):
            kind = rng.choice(("PER", "LOC", "NY"))
            entity = ([(rng.choice(PEOPLE), "B-PER")] if kind == "PER" else [(rng.choice(PLACES), "B-LOC")]
                      if kind == "LOC" else [("New", "B-LOC"), ("York", "I-LOC")])
            at = rng.randint(0, len(rows))
            rows[at:at] = entity
        return "\n".join(f"{w} {t}" for w, t in rows)

    return _write_splits(folder, "conll", (n_train, n_eval), seed, sentence, "\n\n")


def constructed_texts() -> list[str]:
    """Every word of the constructed data sets, for training a tiny tokenizer."""
    words = [*NEUTRAL, *POSITIVE, *NEGATIVE, *PEOPLE, *PLACES, "New", "York"]
    return [" ".join(words), *words, " ".join(reversed(words))]


# --- commands as a user runs them: exit codes, output, servers, terminals ---------------------

def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr
    return done


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(process: subprocess.Popen, url: str, deadline_s: float = 300) -> None:
    """Until /ready answers 200 (the model is loaded); fails at once if the server process exits."""
    import httpx

    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"sft serve exited with {process.returncode}: {process.stdout.read()}")
        try:
            if httpx.get(f"{url}/ready", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # polling for a state, not waiting for time to pass
    raise AssertionError("sft serve never became ready")


class Terminal:
    """A process on a pseudo-terminal: what a user types, and what the terminal shows."""

    def __init__(self, args: list[str], env: dict, cwd=None):
        import pty

        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env, cwd=cwd, close_fds=True)
        os.close(slave)
        self.shown = ""

    def read_until(self, text: str, start: int = 0, deadline_s: float = 300) -> str:
        """What the terminal shows from ``start`` on, once ``text`` appears there (the deadline is
        only against a hang, not a timing check)."""
        deadline = time.monotonic() + deadline_s
        while text not in self.shown[start:]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.shown}")
            ready, _, _ = select.select([self.master], [], [], min(remaining, 1.0))
            if ready:
                try:
                    chunk = os.read(self.master, 4096).decode("utf-8", "replace")
                except OSError:  # the process ended and closed the terminal
                    chunk = ""
                if not chunk and self.process.poll() is not None:
                    raise AssertionError(f"exited with {self.process.returncode} before {text!r}:\n{self.shown}")
                self.shown += chunk
            elif self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode} before {text!r}:\n{self.shown}")
        return self.shown[start:]

    def type(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.process.wait(timeout=120)
        finally:
            if self.process.poll() is None:
                self.process.kill()
            os.close(self.master)


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _pip(env: dict, *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=300,
                          env={**env, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert done.returncode == 0, f"pip {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def installed_fixture(folder: str, distribution: str, copy_to: Path, env: dict):
    """A generator for a module-scoped fixture: a copy of ``tests/fixtures/FOLDER`` in ``copy_to``,
    installed with pip as a real distribution (no build isolation) and uninstalled after; a
    developer's own install of it is used and kept."""
    import importlib
    import importlib.metadata

    copy = copy_to / folder
    shutil.copytree(FIXTURES / folder, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__",
                                                                        ".pytest_cache"))
    try:
        importlib.metadata.distribution(distribution)
        preinstalled = True
    except importlib.metadata.PackageNotFoundError:
        preinstalled = False
    if not preinstalled:
        _pip(env, "install", "-q", "--no-deps", "--no-build-isolation", str(copy))
        importlib.invalidate_caches()
    try:
        yield copy
    finally:
        if not preinstalled:
            _pip(env, "uninstall", "-q", "-y", distribution)
