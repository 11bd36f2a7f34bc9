"""The plugin manager over real entry points: discovery, switching off, duplicates, broken plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import sft_core.host.manager
from sft_core import hookimpl
from sft_core.commands.cli import main
from sft_core.errors import SFTError
from sft_core.host.manager import PluginHost

from helpers import install_distribution, invoke, sft


def make_plugin(name: str, **hooks) -> types.ModuleType:
    """A plugin module named ``name`` whose attributes are the given hook implementations."""
    module = types.ModuleType(name)
    for hook_name, function in hooks.items():
        function.__name__ = hook_name
        setattr(module, hook_name, hookimpl(function))
    return module


def registering(*names, then=None):
    """An ``sft_register_tasks`` implementation registering ``names``, then raising ``then``."""
    def sft_register_tasks(register):
        for name in names:
            register(name, lambda config: None, summary=f"the {name} task")
        if then is not None:
            raise then
    return sft_register_tasks


def add_entry_points(monkeypatch, *extra: EntryPoint):
    """Make ``importlib.metadata.entry_points``, as sft_core.host.manager calls it, also return ``extra``."""
    real = sft_core.host.manager.metadata.entry_points

    def entry_points(**params):
        return [*real(**params), *(ep for ep in extra if ep.group == params.get("group"))]

    monkeypatch.setattr(sft_core.host.manager.metadata, "entry_points", entry_points)


# --- discovery through entry points -----------------------------------------------------------

def test_builtin_task_comes_from_the_entry_point():
    host = PluginHost()
    spec = host.get_task("classification")
    assert spec.provider == "classification" and spec.distribution == "sft-core"
    info = next(p for p in host.plugins if p.name == "classification")
    assert info.module == "sft_classification" and info.error is None
    assert info.distribution == "sft-core" and info.version
    assert "sft_register_tasks" in info.hooks


def install_stray_plugin(monkeypatch, folder: Path) -> None:
    """A distribution ``sft-stray`` with an ``sft`` entry point registering task ``stray``."""
    install_distribution(monkeypatch, folder, "sft-stray", "stray",
                         "from sft_core import hookimpl\n\n"
                         "@hookimpl\n"
                         "def sft_register_tasks(register):\n"
                         "    register('stray', lambda config: None, summary='a plugin installed next to sft')\n")


def test_the_suite_loads_only_the_builtin_plugins_unless_a_test_asks(monkeypatch, tmp_path, load_plugins):
    """tests/conftest.py: a third-party plugin installed in the environment changes nothing a test sees,
    in-process or in an ``sft`` subprocess, until the test asks for it."""
    install_stray_plugin(monkeypatch, tmp_path)

    def listed() -> list[str]:
        done = sft("tasks", timeout=60)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        return [line.split()[0] for line in done.stdout.splitlines()]

    found = {ep.name: ep.dist.name for ep in sft_core.host.manager.metadata.entry_points(group="sft")}
    assert found["stray"] == "sft-stray"  # Python finds it installed
    host = PluginHost()
    assert "stray" not in host.tasks and host.warnings == []
    assert {p.distribution for p in host.plugins} == {"sft-core"}
    names = listed()
    assert "stray" not in names and {"classification", "ner", "qa", "translation", "instruct"} <= set(names)

    load_plugins("sft-stray")
    assert PluginHost().get_task("stray").distribution == "sft-stray"
    assert "stray" in listed()
    monkeypatch.delenv("SFT_LOAD_PLUGINS")  # outside the suite, sft loads every installed plugin
    assert "stray" in PluginHost().tasks


def test_sft_tasks_lists_classification_with_distribution():
    result = invoke("tasks")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    line = next(line for line in lines if line.startswith("classification "))
    assert line.startswith("classification  Sentence and sentence-pair classification")
    assert all(line.endswith("[sft-core]") for line in lines)  # every built-in task
    assert result.stderr == ""


def test_sft_plugins_lists_hooks_and_version():
    result = invoke("plugins")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"sft-core {sft_core.__version__}, plugin contract {sft_core.CONTRACT_VERSION}"
    # the task, and the instruction adapter it offers the instruct plugin's extension point
    assert (f"classification  (sft-core {sft_core.__version__})  hooks: sft_instruction_adapters, sft_register_tasks"
            f"  contract {sft_core.CONTRACT_VERSION}" in lines)  # the built-in plugins declare the current contract
    assert any(line.startswith("instruct ") and "sft_add_hookspecs" in line for line in lines), lines


def test_load_plugins_empty_loads_none(monkeypatch):
    monkeypatch.setenv("SFT_LOAD_PLUGINS", "")
    host = PluginHost()
    assert host.plugins == [] and host.tasks == {}
    result = invoke("tasks", host=host)
    assert result.exit_code == 0
    assert result.stdout.startswith("no tasks registered")
    result = invoke("run", "--task", "classification", "--print-config", host=host)
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: unknown task 'classification'; known tasks: none (no task plugin is loaded)"


def test_load_plugins_names_the_ones_to_load(monkeypatch):
    monkeypatch.setenv("SFT_LOAD_PLUGINS", "somethingelse, classification")
    assert list(PluginHost().tasks) == ["classification"]


@pytest.mark.parametrize("name", ["sft-core", "SFT_Core", "sft.core"])
def test_plugins_are_named_by_distribution_too(monkeypatch, name):
    """The name pip and `sft plugins` show selects a distribution's plugins, spelt any way pip accepts."""
    monkeypatch.setenv("SFT_DISABLE_PLUGINS", name)
    assert PluginHost().tasks == {}
    monkeypatch.delenv("SFT_DISABLE_PLUGINS")
    monkeypatch.setenv("SFT_LOAD_PLUGINS", name)
    assert {"classification", "ner", "qa", "translation", "instruct"} <= set(PluginHost().tasks)


def test_an_unknown_plugin_name_warns_with_the_known_names(monkeypatch):
    monkeypatch.setenv("SFT_DISABLE_PLUGINS", "sft-multiple-choise")
    host = PluginHost()
    assert "classification" in host.tasks  # nothing was disabled
    (warning,) = host.warnings
    assert warning.startswith("SFT_DISABLE_PLUGINS names 'sft-multiple-choise', which is no installed plugin")
    assert "classification" in warning and "sft-core" in warning
    result = invoke("tasks", host=host)
    assert result.exit_code == 0 and f"warning: {warning}" in result.stderr


def test_a_model_whose_plugin_is_missing_says_which_package_to_install(tmp_path):
    import json

    from sft_core import SFTError
    from sft_core import engine

    (tmp_path / "sft_task.json").write_text(json.dumps({
        "task": "multiple-choice", "config": {}, "state": {},
        "provider": {"module": "sft_multiple_choice.task", "distribution": "sft-multiple-choice", "version": "1.2.0"}}))
    with pytest.raises(SFTError, match=r"provided by the package 'sft-multiple-choice' \(it was saved with 1.2.0\), "
                                       r"which is not installed or not loaded: pip install sft-multiple-choice"):
        engine.load_saved(str(tmp_path), PluginHost(), [])


def test_disable_plugins_removes_one(monkeypatch):
    monkeypatch.setenv("SFT_DISABLE_PLUGINS", "classification")
    host = PluginHost()
    assert "classification" not in host.tasks
    assert all(p.name != "classification" for p in host.plugins)
    assert not any(line.startswith("classification") for line in invoke("tasks", host=host).stdout.splitlines())


# --- duplicates ------------------------------------------------------------------------------

def test_duplicate_task_names_both_providers():
    a = make_plugin("sft_dup_a", sft_register_tasks=registering("dup"))
    b = make_plugin("sft_dup_b", sft_register_tasks=registering("dup"))
    with pytest.raises(SFTError) as caught:
        PluginHost(extra_plugins=(a, b))
    message = str(caught.value)
    assert "task 'dup' is registered twice" in message
    assert "'sft_dup_a'" in message and "'sft_dup_b'" in message
    assert "SFT_DISABLE_PLUGINS" in message


def test_duplicate_of_a_builtin_names_its_distribution():
    rival = make_plugin("sft_rival", sft_register_tasks=registering("classification"))
    with pytest.raises(SFTError) as caught:
        PluginHost(extra_plugins=(rival,))
    message = str(caught.value)
    assert message.startswith("task 'classification' is registered twice")
    assert "plugin 'classification' (sft-core)" in message and "plugin 'sft_rival' (no distribution)" in message


def test_duplicate_through_entry_points_is_a_one_line_error(monkeypatch, tmp_path, capsys, load_plugins):
    (tmp_path / "sft_rival_tasks.py").write_text(
        "from sft_core import hookimpl\n\n"
        "@hookimpl\n"
        "def sft_register_tasks(register):\n"
        "    register('classification', lambda config: None)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    add_entry_points(monkeypatch, EntryPoint(name="rival", value="sft_rival_tasks", group="sft"))
    load_plugins("rival")
    with pytest.raises(SystemExit) as exited:
        main(["tasks"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: task 'classification' is registered twice")
    assert "'classification' (sft-core)" in err and "'rival'" in err
    assert "\n" not in err
    # switching one off, as the message suggests, resolves it
    monkeypatch.setenv("SFT_DISABLE_PLUGINS", "rival")
    assert PluginHost().get_task("classification").provider == "classification"


# --- broken plugins --------------------------------------------------------------------------

def test_failing_registration_is_recorded_and_others_work():
    broken = make_plugin("sft_broken", sft_register_tasks=registering("half", then=RuntimeError("boom")))
    good = make_plugin("sft_good", sft_register_tasks=registering("good"))
    host = PluginHost(extra_plugins=(broken, good))
    info = next(p for p in host.plugins if p.name == "sft_broken")
    assert info.error == "registration failed: RuntimeError: boom"
    assert [p.name for p in host.failed] == ["sft_broken"]
    assert "half" not in host.tasks  # what it registered before failing is withdrawn
    assert host.get_task("good").provider == "sft_good"
    assert host.get_task("classification").distribution == "sft-core"
    result = invoke("tasks", host=host)
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "classification" in names and "good" in names and "half" not in names
    assert "warning: plugin 'sft_broken'" in result.stderr and "boom" in result.stderr
    result = invoke("run", "--task", "classification", "--print-config", host=host)
    assert result.exit_code == 0 and "task: classification" in result.stdout


def test_task_config_must_be_a_dataclass():
    def sft_register_tasks(register):
        register("odd", lambda config: None, config=dict)

    host = PluginHost(extra_plugins=(make_plugin("sft_odd", sft_register_tasks=sft_register_tasks),))
    assert "odd" not in host.tasks
    assert "config of task 'odd' must be a dataclass" in host.failed[0].error


def test_misspelt_hook_is_reported_not_ignored():
    def sft_train_strat(config, task, model, state):
        pass

    typo = make_plugin("sft_typo", sft_train_strat=sft_train_strat, sft_register_tasks=registering("typo-task"))
    host = PluginHost(extra_plugins=(typo,))
    info = next(p for p in host.plugins if p.name == "sft_typo")
    assert info.error is not None and info.error.startswith("unknown hook")
    assert "sft_train_strat" in info.error
    assert host.pm.get_plugin("sft_typo") is None  # unregistered: none of its hooks run
    assert "typo-task" not in host.tasks and "classification" in host.tasks
    result = invoke("plugins", host=host)
    assert "sft_typo  (sft_typo)  FAILED: unknown hook" in result.stdout


def test_entry_point_that_fails_to_import(monkeypatch, load_plugins):
    add_entry_points(monkeypatch, EntryPoint(name="broken", value="sft_no_such_module", group="sft"))
    load_plugins("broken")
    host = PluginHost()
    assert [p.name for p in host.failed] == ["broken"]

    result = invoke("plugins", host=host)
    assert result.exit_code == 0
    line = next(line for line in result.stdout.splitlines() if line.startswith("broken"))
    assert line == "broken  (sft_no_such_module)  FAILED: ModuleNotFoundError: No module named 'sft_no_such_module'"
    assert any(line.startswith("classification  (sft-core") for line in result.stdout.splitlines())

    result = invoke("tasks", host=host)
    assert result.exit_code == 0
    assert result.stdout.startswith("classification  ")
    warnings = result.stderr.strip().splitlines()
    assert warnings == ["warning: plugin 'broken' (sft_no_such_module) failed to load: "
                        "ModuleNotFoundError: No module named 'sft_no_such_module'"]

    monkeypatch.setenv("SFT_DISABLE_PLUGINS", "broken")
    assert invoke("tasks").stderr == ""


# --- no torch on the light commands ----------------------------------------------------------

LIGHT_COMMANDS = """
import json, sys
from sft_core.commands.cli import cli
from sft_core.host.manager import PluginHost
host = PluginHost()
host.register_commands(cli)
codes = []
for args in (["--help"], ["tasks"], ["plugins"], ["run", "--help"], ["run", "--task", "classification", "--print-config"],
             ["serve", "--help"], ["export", "--help"]):
    try:
        cli.main(args=args, obj=host, prog_name="sft", standalone_mode=False)
        codes.append(0)
    except SystemExit as exc:
        codes.append(exc.code)
heavy = sorted(m for m in ("torch", "transformers", "datasets", "accelerate", "fastapi", "uvicorn", "onnxruntime",
                           "onnx", "prometheus_client") if m in sys.modules)
print(json.dumps({"codes": codes, "heavy": heavy}), file=sys.stderr)
"""


def test_light_commands_import_no_torch():
    done = subprocess.run([sys.executable, "-c", LIGHT_COMMANDS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stderr.strip().splitlines()[-1])
    assert report["codes"] == [0] * 7
    assert "classification" in done.stdout and "--max-batch-size" in done.stdout  # the commands really ran
    assert report["heavy"] == []


def test_a_saved_model_records_the_distribution_providing_its_task():
    from sft_core.engine.checkpoint import provider
    from sft_core.config import build_config

    host = PluginHost()
    spec = host.get_task("ner")
    task = spec.factory(build_config(spec, []))
    assert provider(task) == {"module": "sft_ner.task", "distribution": "sft-core", "version": sft_core.__version__}
