"""``sft bench``: run benchmark recipes, each in its own process, and tabulate what they measure.

A recipe is a config file (``configs/NAME.yaml``) with a ``bench:`` section that ``sft run`` ignores::

    bench:
      title: GLUE CoLA
      suites: [glue]
      metrics: [matthews_correlation, accuracy]    # shown in the table; the first is the main one
      reference: "MiniLM-L6-H384: Matthews corr. 0.475 (Wang et al. 2020, MiniLM paper)"
      budget: "800 of the 1,043 dev sentences train, the other 243 evaluate; 3 epochs"
      estimate_minutes: 1                          # CPU time on 2 cores at this budget, for planning
      quick: {data.max_train_samples: 200, trainer.epochs: 1}   # the --quick subset

Each recipe runs as ``python -m sft_core run --config RECIPE`` in a child process, so a crash
stops only that recipe, and wall time and peak memory (the child's max RSS) belong to it alone.
Results are rewritten after every recipe, so an interruption loses nothing already measured.
Imports no torch.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ...config import DATA_DIR_ENV, RECIPE_KEY, build_config, flatten, load_config_file, read_yaml_mapping
from ...errors import ConfigError, SFTError
from ...engine.files import write_text as write_text_atomic

RECIPES_DIR = Path(__file__).resolve().parents[3] / "configs"  # in a source checkout
BENCH_KEYS = ("title", "suites", "metrics", "reference", "budget", "estimate_minutes", "quick")
ALL = "all"
VERSIONED = ("sft-core", "torch", "transformers", "accelerate", "datasets", "tokenizers")


@dataclass
class Recipe:
    """A benchmark recipe: its config file and the ``bench:`` metadata."""

    name: str
    path: Path
    title: str = ""
    suites: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    reference: str = ""
    budget: str = ""
    estimate_minutes: float | None = None
    quick: dict[str, Any] = field(default_factory=dict)  # flat dotted keys

    def overrides(self, quick: bool) -> list[str]:
        """The quick block as ``KEY=VALUE`` arguments of ``sft run`` (none for a full run)."""
        if not quick:
            return []
        return [f"{key}={value if isinstance(value, str) else json.dumps(value)}" for key, value in self.quick.items()]


def load_recipe(path: str | Path) -> Recipe:
    """Read the ``bench:`` section of a recipe file, checking its keys."""
    path = Path(path)
    meta = read_yaml_mapping(path).get(RECIPE_KEY) or {}
    if not isinstance(meta, dict):
        raise ConfigError(f"{path}: `{RECIPE_KEY}:` must be a mapping, got {type(meta).__name__}")
    for key in meta:
        if key not in BENCH_KEYS:
            close = difflib.get_close_matches(str(key), BENCH_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known keys: {', '.join(BENCH_KEYS)}"
            raise ConfigError(f"{path}: unknown key {RECIPE_KEY}.{key}{hint}")
    quick = meta.get("quick") or {}
    if not isinstance(quick, dict):
        raise ConfigError(f"{path}: {RECIPE_KEY}.quick must be a mapping of config keys to values")
    as_list = lambda value: [value] if isinstance(value, str) else list(value or [])  # noqa: E731
    estimate = meta.get("estimate_minutes")
    return Recipe(name=path.stem, path=path, title=str(meta.get("title") or path.stem),
                  suites=as_list(meta.get("suites")), metrics=as_list(meta.get("metrics")),
                  reference=str(meta.get("reference") or ""), budget=str(meta.get("budget") or ""),
                  estimate_minutes=float(estimate) if estimate is not None else None, quick=flatten(quick))


def find_recipes(folder: str | Path) -> dict[str, Recipe]:
    """Every recipe in ``folder`` by name (the file name without .yaml), in name order."""
    return {path.stem: load_recipe(path) for path in sorted(Path(folder).glob("*.yaml"))}


def suites(recipes: dict[str, Recipe]) -> dict[str, list[str]]:
    """Suite name -> recipe names; ``all`` holds every recipe."""
    out: dict[str, list[str]] = {ALL: list(recipes)}
    for name, recipe in recipes.items():
        for suite in recipe.suites:
            out.setdefault(suite, []).append(name)
    return out


def resolve(names: list[str], folder: str | Path | None) -> list[Recipe]:
    """Recipes for command-line ``names``: suites, recipe names or recipe files; ``all`` when none."""
    recipes = find_recipes(folder) if folder is not None and Path(folder).is_dir() else {}
    groups = suites(recipes)
    chosen: dict[Path, Recipe] = {}
    for name in names or [ALL]:
        if name.endswith((".yaml", ".yml")) or os.sep in name:
            if not Path(name).is_file():
                raise ConfigError(f"recipe file not found: {name}")
            found = [load_recipe(name)]
        elif name in groups:
            found = [recipes[n] for n in groups[name]]
        elif name in recipes:
            found = [recipes[name]]
        else:
            known = sorted(groups) + sorted(recipes)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"no suite or recipe {name!r} in {folder}; {hint}suites: {', '.join(sorted(groups))}; "
                              f"recipes: {', '.join(recipes) or 'none'}")
        for recipe in found:
            chosen.setdefault(recipe.path.resolve(), recipe)
    return list(chosen.values())


# --- running one recipe ------------------------------------------------------------------------

def _wait(proc: subprocess.Popen, timeout_s: float | None) -> tuple[int, float | None, bool]:
    """Wait for ``proc``: (exit code, peak RSS in MB or None, whether it was stopped for time)."""
    if not hasattr(os, "wait4"):  # no per-child resource usage on this platform
        try:
            return proc.wait(timeout=timeout_s), None, False
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(), None, True
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            # ru_maxrss: kilobytes on Linux, bytes on macOS
            rss = usage.ru_maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)
            return code, round(rss, 1), timed_out
        if deadline is not None and time.monotonic() > deadline and not timed_out:
            timed_out = True
            proc.send_signal(signal.SIGINT)  # let the run save what it has, then make sure it ends
            deadline = time.monotonic() + 30
        elif timed_out and time.monotonic() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(0.2)


def _reason(stderr: str, code: int) -> str:
    """One line saying why a run failed: its ``error:`` line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    line = errors[-1][len("error:"):].strip() if errors else (lines[-1] if lines else "")
    return f"exit {code}: {line}" if line else f"exit {code}"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_recipe(recipe: Recipe, host, *, data_dir: Path, output: Path, quick: bool,
               timeout_minutes: float | None = None) -> dict:
    """Run one recipe in a child process and return its result record (never raises for the run)."""
    run_dir = output / "runs" / recipe.name
    overrides = recipe.overrides(quick)
    # a recipe measured again replaces its earlier run (sft run refuses an occupied folder otherwise)
    command = [sys.executable, "-m", "sft_core", "run", "--config", str(recipe.path), "--output-dir", str(run_dir),
               "--overwrite", *overrides]
    result: dict[str, Any] = {
        "recipe": recipe.name, "title": recipe.title, "config": str(recipe.path), "status": "failed", "error": None,
        "budget": ("quick: " + (", ".join(overrides) or "none given, the full recipe")) if quick else recipe.budget, "quick": quick,
        "reference": recipe.reference, "main_metric": recipe.metrics[0] if recipe.metrics else None, "metrics": {},
        "command": f"{DATA_DIR_ENV}={data_dir} sft " + " ".join(command[3:]), "output_dir": str(run_dir)}
    start = time.perf_counter()
    try:  # the checks `sft run` would make, without the seconds of starting a process
        layer = load_config_file(recipe.path, str(data_dir))
        task = layer.get("task")
        if not task:
            raise ConfigError(f"{recipe.path}: no `task:`")
        result["task"] = task
        layers = [(f"config file {recipe.path}", {k: v for k, v in layer.items() if k != "task"})]
        layers += [(f"{RECIPE_KEY}.quick of {recipe.path}", dict(recipe.quick))] if quick else []
        config = build_config(host.get_task(task), layers)
        result["seed"] = config.trainer.seed
    except SFTError as exc:
        result.update(error=str(exc), wall_seconds=round(time.perf_counter() - start, 2))
        return result

    logs = output / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, DATA_DIR_ENV: str(data_dir), "SFT_CACHE_DIR": str(output / "cache")}
    env.setdefault("TQDM_DISABLE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    with open(logs / f"{recipe.name}.out", "w") as out, open(logs / f"{recipe.name}.err", "w") as err:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        try:
            code, rss, timed_out = _wait(proc, timeout_minutes * 60 if timeout_minutes else None)
        finally:
            if proc.poll() is None:  # interrupted while waiting: do not leave the run behind
                proc.kill()
                proc.wait()
    result.update(wall_seconds=round(time.perf_counter() - start, 2), peak_rss_mb=rss, exit_code=code)
    train = _read_json(run_dir / "train_results.json")
    evals = _read_json(run_dir / "eval_results.json")
    info = _read_json(run_dir / "run_info.json")
    versions = info.get("versions", {})
    result.update(seed=info.get("seed", result.get("seed")), device=versions.get("device"), versions=versions,
                  train_samples=train.get("train_samples"), train_runtime=train.get("train_runtime"),
                  train_samples_per_second=train.get("train_samples_per_second"),
                  epochs_completed=train.get("epochs_completed"), train_stop=train.get("status"),
                  eval_samples=evals.get("eval_samples"), eval_samples_per_second=evals.get("eval_samples_per_second"))
    shown = recipe.metrics or [k for k, v in evals.items() if not k.startswith("eval_") and isinstance(v, (int, float))]
    result["metrics"] = {name: evals[name] for name in shown if name in evals}
    if timed_out:
        result["error"] = f"stopped after the time limit of {timeout_minutes:g} min (--timeout-minutes)"
    elif code != 0:
        result["error"] = _reason((logs / f"{recipe.name}.err").read_text(errors="replace"), code)
    elif not evals:
        result["error"] = f"the run wrote no evaluation results ({run_dir / 'eval_results.json'})"
    else:
        missing = [name for name in recipe.metrics if name not in evals]
        result["status"] = "ok"
        if missing:
            result["error"] = f"metrics not reported by the run: {', '.join(missing)}"
    return result


# --- the report --------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def environment(command: str, data_dir: Path, quick: bool) -> dict:
    """Date, machine, versions and command of a bench run (the header of the report)."""
    return {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gb": _memory_gb(),
                        "platform": platform.platform()},
            "versions": {"python": platform.python_version(), **{n: _version(n) for n in VERSIONED}},
            "command": command, "data_dir": str(data_dir), "quick": quick}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _number(value, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown(header: dict, results: list[dict]) -> str:
    """The report as markdown: the header, then one table row per recipe."""
    machine = header["machine"]
    memory = f", {machine['memory_gb']:g} GB" if machine.get("memory_gb") else ""
    devices = sorted({r["device"] for r in results if r.get("device")})
    versions = ", ".join(f"{k} {v}" for k, v in header["versions"].items() if v)
    mode = ("quick: small subsets as a smoke check; the metrics are not comparable with the references"
            if header["quick"] else "full: each recipe at the budget it states")
    lines = ["# sft bench results", "",
             f"- date: {header['date']}",
             f"- machine: {machine['cpu']}, {machine['cores']} cores{memory}; {machine['platform']}",
             f"- device: {', '.join(devices) or 'unknown (no run started)'}",
             f"- versions: {versions}",
             *(f"- command: `{c}`" for c in header.get("commands") or [header["command"]]),
             f"- mode: {mode}", "",
             "| recipe | budget | metric(s) | reference | train samples/s | eval samples/s | wall | peak MB | status |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        metrics = ", ".join(f"{'**' if name == r['main_metric'] else ''}{name} {value:.4g}"
                            f"{'**' if name == r['main_metric'] else ''}" for name, value in r["metrics"].items())
        status = r["status"] if not r["error"] else f"{r['status']}: {r['error']}"
        row = [r["recipe"], r["budget"], metrics, r["reference"], _number(r.get("train_samples_per_second"), 1),
               _number(r.get("eval_samples_per_second"), 1), _duration(r.get("wall_seconds")),
               _number(r.get("peak_rss_mb"), 0), status]
        lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines += ["", "Per recipe: seed, device, versions and the exact command are in results.json; "
              "each run's folder is under runs/, its output under logs/."]
    return "\n".join(lines) + "\n"



def write_report(output: Path, header: dict, results: list[dict]) -> None:
    write_text_atomic(output / "results.json", json.dumps({"header": header, "results": results}, indent=2) + "\n")
    write_text_atomic(output / "results.md", markdown(header, results))


def earlier_results(output: Path, quick: bool, names: list[str]) -> tuple[list[dict], list[str]]:
    """Rows of an earlier report in ``output`` (same mode) for recipes not run again, and its commands.

    Running some recipes into a folder that already has results replaces their rows and keeps the
    others, so a long benchmark can be measured in parts; a new folder starts a new report.
    """
    data = _read_json(output / "results.json")
    header = data.get("header", {})
    if not data or header.get("quick") != quick:
        return [], []
    kept = [r for r in data.get("results", []) if r.get("recipe") not in names]
    return kept, (header.get("commands") or [header.get("command")]) if kept else []


def bench(recipes: list[Recipe], host, *, data_dir: Path, output: Path, quick: bool, command: str,
          timeout_minutes: float | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Run ``recipes`` one after the other, rewriting results.json and results.md after each."""
    output.mkdir(parents=True, exist_ok=True)
    header = environment(command, data_dir, quick)
    kept, commands = earlier_results(output, quick, [r.name for r in recipes])
    header["commands"] = [*commands, command]
    results: list[dict] = []
    for i, recipe in enumerate(recipes, 1):
        echo(f"[{i}/{len(recipes)}] {recipe.name}: running ...")
        result = run_recipe(recipe, host, data_dir=data_dir, output=output, quick=quick,
                            timeout_minutes=timeout_minutes)
        result["finished"] = datetime.now().astimezone().isoformat(timespec="seconds")
        results.append(result)
        write_report(output, header, kept + results)
        figures = ", ".join(f"{k} {v:.4g}" for k, v in result["metrics"].items())
        took = _duration(result.get("wall_seconds"))
        echo(f"[{i}/{len(recipes)}] {recipe.name}: " + (f"ok in {took}: {figures}" if result["status"] == "ok"
                                                       else f"FAILED after {took}: {result['error']}"))
    return results


def describe(recipes: dict[str, Recipe]) -> list[str]:
    """Lines for ``sft bench --list``: the suites, then each recipe with its budget and estimate."""
    lines = [f"suite {name}: {', '.join(members)}" for name, members in suites(recipes).items()]
    for recipe in recipes.values():
        estimate = f" (~{recipe.estimate_minutes:g} min on 2 CPU cores)" if recipe.estimate_minutes else ""
        lines.append(f"{recipe.name}: {recipe.title}; {recipe.budget}{estimate}")
    return lines


__all__ = ["Recipe", "load_recipe", "find_recipes", "suites", "resolve", "run_recipe", "bench", "markdown",
           "write_report", "environment", "describe"]
