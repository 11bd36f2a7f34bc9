"""``sft new-task NAME``: writes a task plugin package that installs, passes its own tests and trains.

Attached to the CLI through ``sft_register_commands``, as a third-party command would be. The
package follows the naming rule of CONTRIBUTING.md: distribution ``sft-NAME``, import package
``sft_NAME``, entry point and task ``NAME``. ``templates`` holds the files.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from ...host.hookspecs import hookimpl
from ...errors import SFTError

NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


def names(name: str) -> dict[str, str]:
    """The placeholders' values for task ``name``."""
    if not NAME.match(name):
        raise SFTError(f"task name {name!r}: use lower-case letters, digits and single hyphens, starting with a letter "
                       "(e.g. sentiment or multi-label)")
    module = "sft_" + name.replace("-", "_")
    return {"__NAME__": name, "__DIST__": f"sft-{name}", "__MODULE__": module,
            "__CLASS__": "".join(part.capitalize() for part in name.split("-")) + "Task"}


def write_package(name: str, folder: Path) -> Path:
    """Write the package for task ``name`` into ``folder/sft-NAME``; returns that path."""
    from ...task import CONTRACT_VERSION
    from . import templates

    values = {**names(name), "__CONTRACT__": CONTRACT_VERSION}
    root = Path(folder) / values["__DIST__"]
    if root.exists():
        raise SFTError(f"{root} exists; remove it or give another --dir")
    module = root / values["__MODULE__"]
    files = {
        root / "pyproject.toml": templates.PYPROJECT,
        root / "README.md": templates.README,
        module / "__init__.py": templates.INIT,
        module / "options.py": templates.OPTIONS,
        module / "task.py": templates.TASK,
        root / "tests" / f"test_{values['__MODULE__'][4:]}.py": templates.TEST,
        module / "sample_data" / "train.jsonl": templates.sample("train"),
        module / "sample_data" / "eval.jsonl": templates.sample("eval"),
    }
    for path, text in files.items():
        for key, value in values.items():
            text = text.replace(key, value)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@click.command("new-task")
@click.argument("name")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(file_okay=False),
              help="Folder to write the package sft-NAME into.")
def new_task(name, folder):
    """Write a working task plugin package sft-NAME (task NAME): pyproject with the entry point,
    options, reader and task, sample data and a test module running sft's conformance kit.

    \b
    Then:
      pip install -e sft-NAME && (cd sft-NAME && python -m pytest)
      sft run --task NAME
    """
    root = write_package(name, Path(folder))
    click.echo(f"wrote {root}: pip install -e {root} && sft run --task {name}")


@hookimpl
def sft_register_commands(cli):
    """Adds ``sft new-task``."""
    cli.add_command(new_task)
