"""``sft bench``: recipes and suites, the recipes of configs/, and a run of two tiny recipes (one failing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sft_core.commands.bench import recipes as bench
from sft_core.config import build_config, load_config_file
from sft_core.errors import ConfigError

from helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))


def write_recipe(folder: Path, name: str, body: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


# --- the recipes in configs/ -----------------------------------------------------------------

@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_resolves(host, path):
    recipe = bench.load_recipe(path)
    assert recipe.title and recipe.metrics and recipe.reference and recipe.budget and recipe.quick
    assert recipe.budget.split(":")[0] in ("full", "subset", "time-bounded")  # the budget says which it is
    assert recipe.estimate_minutes and recipe.estimate_minutes > 0
    layer = load_config_file(path, "/benchmark-data")
    task = layer.pop("task")
    if task not in host.tasks:
        pytest.skip(f"task {task!r} is not installed")
    spec = host.get_task(task)
    config = build_config(spec, [(str(path), layer)])
    mixture = getattr(config.options, "mixture", None)  # instruct: each source names its own files
    sources = mixture or [{"train": config.data.train, "eval": config.data.eval}]
    for i, source in enumerate(sources):
        for key in ("train", "eval"):
            files = source[key] if isinstance(source[key], list) else [source[key]]  # data.train may be a list
            assert files and all(f.startswith("/benchmark-data/") for f in files), \
                f"source {i}: {key} is not under {{data_dir}}"
    quick = build_config(spec, [(str(path), layer), ("quick", dict(recipe.quick))])
    if mixture:  # --quick always runs a subset
        assert quick.options.mixture_size < config.options.mixture_size
    else:
        assert quick.data.max_train_samples and quick.data.max_eval_samples


def test_suites_of_configs():
    groups = bench.suites(bench.find_recipes(ROOT / "configs"))
    assert sorted(groups["glue"]) == ["cola", "qnli", "rte", "sst2", "stsb"]
    assert sorted(groups["all"]) == sorted(p.stem for p in RECIPES)
    assert {"conll2003", "squad", "multi30k"} <= set(groups["all"])
    assert groups["documents"] == ["imdb"]


def test_cola_recipe_selects_matthews(host):
    layer = load_config_file(ROOT / "configs" / "cola.yaml")
    layer.pop("task")
    config = build_config(host.get_task("classification"), [("cola", layer)])
    assert config.trainer.metric_for_best == "matthews_correlation"
    assert bench.load_recipe(ROOT / "configs" / "cola.yaml").metrics[0] == "matthews_correlation"


# --- loading -----------------------------------------------------------------------------------

def test_run_ignores_bench_section_and_expands_data_dir(tmp_path, monkeypatch):
    path = write_recipe(tmp_path, "r", {"task": "classification", "data": {"train": "{data_dir}/a.tsv"},
                                        "bench": {"title": "R", "quick": {"trainer": {"epochs": 1}}}})
    monkeypatch.delenv("SFT_DATA_DIR", raising=False)
    assert load_config_file(path) == {"task": "classification", "data": {"train": "../shared/data/a.tsv"}}
    monkeypatch.setenv("SFT_DATA_DIR", "/elsewhere/")
    assert load_config_file(path)["data"]["train"] == "/elsewhere/a.tsv"
    assert load_config_file(path, "/given")["data"]["train"] == "/given/a.tsv"
    assert bench.load_recipe(path).quick == {"trainer.epochs": 1}  # nested or dotted keys alike


def test_unknown_bench_key(tmp_path):
    path = write_recipe(tmp_path, "r", {"task": "classification", "bench": {"refrence": "x"}})
    with pytest.raises(ConfigError, match=r"unknown key bench.refrence \(did you mean 'reference'\?\)"):
        bench.load_recipe(path)


def test_resolve_names_suites_and_files(tmp_path):
    for name, suites in (("b", ["glue"]), ("a", ["glue", "small"]), ("c", [])):
        write_recipe(tmp_path, name, {"task": "classification", "bench": {"suites": suites}})
    names = lambda args: [r.name for r in bench.resolve(args, tmp_path)]  # noqa: E731
    assert names([]) == names(["all"]) == ["a", "b", "c"]
    assert names(["glue"]) == ["a", "b"]
    assert names(["c", "glue", "a"]) == ["c", "a", "b"]  # in the order asked, each once
    (tmp_path / "elsewhere").mkdir()
    other = write_recipe(tmp_path / "elsewhere", "z", {"task": "ner"})
    assert names([str(other), "small"]) == ["z", "a"]
    with pytest.raises(ConfigError, match=r"no suite or recipe 'glu' .* did you mean 'glue'\? suites: all, glue, small; "
                                          r"recipes: a, b, c"):
        bench.resolve(["glu"], tmp_path)
    with pytest.raises(ConfigError, match="recipe file not found: nowhere.yaml"):
        bench.resolve(["nowhere.yaml"], tmp_path)


def test_quick_overrides_as_arguments(tmp_path):
    path = write_recipe(tmp_path, "r", {"task": "classification", "bench": {
        "quick": {"data": {"max_train_samples": 5, "train_rows": "0-9"}, "trainer.lr": 0.001, "trainer.group_by_length": False}}})
    recipe = bench.load_recipe(path)
    assert recipe.overrides(quick=False) == []
    assert recipe.overrides(quick=True) == ["data.max_train_samples=5", "data.train_rows=0-9", "trainer.lr=0.001",
                                           "trainer.group_by_length=false"]


def test_failure_reason_and_table_cells():
    assert bench._reason("Traceback ...\nwarning: x\nerror: bad | thing\n", 2) == "exit 2: bad | thing"
    assert bench._reason("Killed\n", -9) == "exit -9: Killed"
    row = {"recipe": "r", "budget": "b", "metrics": {}, "main_metric": None, "reference": "", "status": "failed",
           "error": "a | b\nc"}
    header = bench.environment("sft bench r", Path("/d"), quick=False)
    assert "| failed: a \\| b c |" in bench.markdown(header, [row])


# --- a bench run -------------------------------------------------------------------------------

def test_bench_runs_recipes_and_reports_failures(tiny_model, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [("a great warm film", 1), ("dull and long", 0), ("funny and moving", 1), ("a boring mess", 0)] * 4
    (data / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows))
    (data / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in rows[:6]))
    (data / "one_label.tsv").write_text("sentence\tlabel\n" + "".join(f"{t}\t1\n" for t, _ in rows))
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    common = {"task": "classification", "model": tiny_model,
              # a full run would take 100 steps; --quick must bring it down to 2
              "trainer": {"epochs": 50, "lr": 1e-3, "batch_size": 8, "eval_batch_size": 8}}
    write_recipe(recipes, "good", {**common, "data": {"train": "{data_dir}/train.tsv", "eval": "{data_dir}/dev.tsv"},
                                   "bench": {"title": "Good", "metrics": ["accuracy", "f1"], "reference": "chance: 0.5",
                                             "budget": "full: 50 epochs", "quick": {"trainer.max_steps": 2}}})
    write_recipe(recipes, "bad", {**common, "data": {"train": "{data_dir}/one_label.tsv", "eval": "{data_dir}/dev.tsv"},
                                  "bench": {"metrics": ["accuracy"], "quick": {"trainer.max_steps": 2}}})
    write_recipe(recipes, "missing", {"task": "no-such-task", "bench": {"metrics": ["bleu"]}})
    out = tmp_path / "out"
    result = invoke("bench", "bad", "good", "missing", "--quick", "--data-dir", data, "--recipes-dir", recipes,
                    "--output", out)

    assert result.exit_code == 1, result.output
    assert "2 of 3 recipes failed: bad, missing" in result.output
    report = json.loads((out / "results.json").read_text())
    header, (bad, good, missing) = report["header"], report["results"]
    assert header["quick"] and header["machine"]["cores"] and header["versions"]["torch"]
    assert "sft bench bad good missing --data-dir" in header["command"]

    assert good["status"] == "ok" and good["error"] is None
    evals = json.loads((out / "runs" / "good" / "eval_results.json").read_text())
    assert good["metrics"] == {"accuracy": evals["accuracy"], "f1": evals["f1"]}  # the run's figures, as it wrote them
    predictions = [json.loads(line) for line in (out / "runs" / "good" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6
    assert good["metrics"]["accuracy"] == pytest.approx(sum(p["prediction"] == p["label"] for p in predictions) / 6)
    assert good["train_samples_per_second"] > 0 and good["eval_samples_per_second"] > 0
    assert good["wall_seconds"] > 0 and good["peak_rss_mb"] > 50
    assert good["seed"] == 42 and good["device"] == "cpu" and good["versions"]["transformers"]
    assert good["budget"] == "quick: trainer.max_steps=2" and good["reference"] == "chance: 0.5"
    run_config = yaml.safe_load((out / "runs" / "good" / "config.yaml").read_text())
    assert run_config["trainer"]["max_steps"] == 2 and run_config["data"]["train"] == str(data / "train.tsv")
    assert json.loads((out / "runs" / "good" / "train_results.json").read_text())["train_steps"] == 2

    assert bad["status"] == "failed" and bad["error"].startswith("exit 2: ") and "single class" in bad["error"]
    assert bad["peak_rss_mb"] and (out / "logs" / "bad.err").read_text().count("single class") == 1
    assert missing["status"] == "failed" and "unknown task 'no-such-task'" in missing["error"]

    table = (out / "results.md").read_text()
    assert "- mode: quick" in table and f"- command: `{header['command']}`" in table
    assert "| recipe | budget | metric(s) | reference | train samples/s | eval samples/s | wall | peak MB | status |" in table
    good_row = next(line for line in table.splitlines() if line.startswith("| good |"))
    assert f"**accuracy {good['metrics']['accuracy']:.4g}**" in good_row and good_row.endswith("| ok |")
    assert next(line for line in table.splitlines() if line.startswith("| bad |")).count("failed: exit 2:") == 1

    # measuring in parts: running one recipe again into the folder replaces its row, keeps the others
    again = invoke("bench", "missing", "--quick", "--data-dir", data, "--recipes-dir", recipes, "--output", out)
    assert again.exit_code == 1, again.output
    merged = json.loads((out / "results.json").read_text())
    assert [r["recipe"] for r in merged["results"]] == ["bad", "good", "missing"]
    assert merged["results"][1] == good  # the good row as measured the first time
    assert len(merged["header"]["commands"]) == 2 and merged["header"]["commands"][0] == header["command"]
    assert (out / "results.md").read_text().count("- command: `sft bench") == 2


def test_bench_errors_before_running(tmp_path):
    done = invoke("bench", "sst2", "--data-dir", tmp_path / "nowhere")
    assert done.exit_code == 2 and "data folder not found" in done.output and "--data-dir" in done.output
    done = invoke("bench", "nope", "--data-dir", tmp_path)
    assert done.exit_code == 2 and "no suite or recipe 'nope'" in done.output
    listing = invoke("bench", "--list")
    assert listing.exit_code == 0 and "suite glue: cola, qnli, rte, sst2, stsb" in listing.output


def test_a_run_past_its_time_limit_is_stopped():
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code, rss, timed_out = bench._wait(proc, timeout_s=0.5)
    assert timed_out and code != 0 and rss is not None and proc.poll() == code
