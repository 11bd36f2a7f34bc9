"""The plugin contract: declared contract versions, and plugins that fail without taking sft down."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import types

import click
import pytest

import sft_core
from sft_core import hookimpl
from sft_core.host.manager import PluginHost, contract_problem

from helpers import invoke


def plugin(name: str, contract=None, registers: tuple[str, ...] = ("t",), raises: BaseException | None = None,
           **hooks) -> types.ModuleType:
    """A plugin module registering ``registers`` (then raising ``raises``), declaring ``contract``."""
    module = types.ModuleType(name)
    if contract is not None:
        module.SFT_CONTRACT = contract

    def sft_register_tasks(register):
        for task in registers:
            register(f"{name}-{task}", lambda config: None, summary=task)
        if raises is not None:
            raise raises

    module.sft_register_tasks = hookimpl(sft_register_tasks)
    for hook_name, function in hooks.items():
        setattr(module, hook_name, hookimpl(function))
    return module


def info(host: PluginHost, name: str):
    return next(p for p in host.plugins if p.name == name)


def test_contract_versions():
    assert sft_core.CONTRACT_VERSION == "2.3"
    assert contract_problem("2.3") is None and contract_problem("2.2") is None and contract_problem("2.1") is None and contract_problem("2.0") is None and contract_problem(2) is None and contract_problem("2") is None
    # 1.x plugins load through sft_core.compat, up to 1.1, the last 1.x contract
    assert contract_problem("1.0") is None and contract_problem("1.1") is None and contract_problem(1) is None
    assert contract_problem("3.0") == ("targets plugin contract 3.0, but sft-core 0.1.0 provides contract 2.3; "
                                       "install a release of the plugin made for contract 2.x or a newer sft-core")
    assert "targets plugin contract 2.4" in contract_problem("2.4")  # needs features of a newer minor version
    assert "targets plugin contract 1.3" in contract_problem("1.3")  # a 1.x minor that never existed
    assert contract_problem(0) == ("targets plugin contract 0.0, but sft-core 0.1.0 provides contract 2.3; "
                                   "install a release of the plugin made for contract 2.x")
    assert contract_problem("one").startswith("SFT_CONTRACT = 'one' is not a contract version")


def test_incompatible_contract_is_a_failed_plugin_and_others_work():
    host = PluginHost(extra_plugins=(plugin("sft_future", contract="3.0"), plugin("sft_current", contract="1.0")))
    assert "sft_future-t" not in host.tasks and host.pm.get_plugin("sft_future") is None
    assert "sft_current-t" in host.tasks and "classification" in host.tasks
    assert info(host, "sft_current").contract == "1.0" and info(host, "sft_current").error is None
    result = invoke("plugins", host=host)
    lines = result.stdout.splitlines()
    assert lines[0] == "sft-core 0.1.0, plugin contract 2.3"
    assert ("sft_future  (sft_future)  FAILED: targets plugin contract 3.0, but sft-core 0.1.0 provides contract 2.3; "
            "install a release of the plugin made for contract 2.x or a newer sft-core") in lines
    assert "sft_current  (sft_current)  hooks: sft_register_tasks  contract 1.0" in lines
    result = invoke("tasks", host=host)
    assert result.exit_code == 0 and "warning: plugin 'sft_future' (sft_future) failed to load: targets plugin contract 3.0" in result.stderr


@pytest.mark.parametrize("raises", [sft_core.SFTError("needs a licence key"), SystemExit(3), KeyError("x")])
def test_any_error_in_registration_switches_only_that_plugin_off(raises):
    hooks = {"sft_step_end": lambda config, state, loss, lr: None}
    host = PluginHost(extra_plugins=(plugin("sft_bad", registers=("a",), raises=raises, **hooks), plugin("sft_good")))
    assert info(host, "sft_bad").error.startswith(f"registration failed: {type(raises).__name__}")
    assert "sft_bad-a" not in host.tasks and "sft_good-t" in host.tasks and "classification" in host.tasks
    assert host.pm.get_plugin("sft_bad") is None  # none of its hooks run either
    assert not any(impl.plugin_name == "sft_bad" for impl in host.hook.sft_step_end.get_hookimpls())


def test_failing_command_registration_is_reported_and_withdrawn():
    def sft_register_commands(cli):
        cli.command("half")(lambda: None)
        raise RuntimeError("no config file")

    group = click.Group()
    group.command("kept")(lambda: None)
    host = PluginHost(extra_plugins=(plugin("sft_cmd", sft_register_commands=sft_register_commands),))
    host.register_commands(group)
    # chat: the built-in instruct plugin's command; export, new-task, report, serve and tune: the
    # core's own command plugins
    assert sorted(group.commands) == ["bench", "chat", "export", "kept", "new-task", "report", "serve", "tune"]
    assert info(host, "sft_cmd").error == "command registration failed: RuntimeError: no config file"
    assert "sft_cmd-t" not in host.tasks and "classification" in host.tasks


def test_data_config_must_subclass_data_config():
    @dataclasses.dataclass
    class Columns:
        text: str = "text"

    def sft_register_tasks(register):
        register("odd", lambda config: None, data_config=Columns)

    module = types.ModuleType("sft_odd")
    module.sft_register_tasks = hookimpl(sft_register_tasks)
    host = PluginHost(extra_plugins=(module,))
    assert "odd" not in host.tasks
    assert "data_config of task 'odd' must subclass sft_core.DataConfig" in info(host, "sft_odd").error


def test_entry_point_importing_with_a_multiline_error_is_one_line(monkeypatch, tmp_path, load_plugins):
    (tmp_path / "sft_noisy.py").write_text("raise ImportError('first line\\nsecond line')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from importlib.metadata import EntryPoint

    import sft_core.host.manager

    real = sft_core.host.manager.metadata.entry_points
    extra = EntryPoint(name="noisy", value="sft_noisy", group="sft")
    monkeypatch.setattr(sft_core.host.manager.metadata, "entry_points",
                        lambda **kw: [*real(**kw), *([extra] if kw.get("group") == "sft" else [])])
    load_plugins("noisy")
    host = PluginHost()
    assert info(host, "noisy").error == "ImportError: first line"
    assert "classification" in host.tasks


def test_public_api_imports_no_torch():
    code = ("import sys, sft_core; from sft_core import hookimpl, Register, Task, DataConfig, RunConfig, "
            "TrainerConfig, SFTError, DataError, ConfigError, CONTRACT_VERSION; import sft_core.testing; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
