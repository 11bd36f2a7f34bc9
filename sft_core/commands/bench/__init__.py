"""``sft bench``: run benchmark recipes, each in its own process, and tabulate what they measure
(``recipes``). Attached to the CLI through ``sft_register_commands``; imports no torch."""

from __future__ import annotations

from pathlib import Path

import click

from ...host.hookspecs import hookimpl
from ..common import host_of


@click.command("bench")
@click.argument("names", nargs=-1, metavar="[SUITE|RECIPE]...")
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="SFT_DATA_DIR", show_envvar=True,
              help="Folder of the benchmark data (glue/, conll2003/, squad/, multi30k/), what {data_dir} in a recipe "
                   "stands for [default: ../shared/data].")
@click.option("--quick", is_flag=True, help="Run each recipe's small `quick` subset: a smoke check of a few minutes in all.")
@click.option("--output", default="runs/bench", show_default=True, type=click.Path(file_okay=False),
              help="Folder for results.json, results.md, logs/ and a run folder per recipe.")
@click.option("--recipes-dir", type=click.Path(file_okay=False),
              help="Folder of recipes that suite and recipe names refer to [default: configs/ of the sft checkout].")
@click.option("--timeout-minutes", type=float, help="Stop a recipe after this many minutes and report it as failed.")
@click.option("--list", "list_only", is_flag=True, help="List the suites and recipes with their budgets, and exit.")
@click.pass_context
def bench_command(ctx, names, data_dir, quick, output, recipes_dir, timeout_minutes, list_only):
    """Run benchmark recipes (default: all) and write results.json and results.md.

    Names are suites (all, glue, ...), recipe names (sst2, cola, ...) or recipe files. Each recipe
    runs in its own process; one that fails is reported in the table and the others still run.

    \b
    Examples:
      sft bench --list
      sft bench glue --quick
      sft bench sst2 conll2003 --data-dir ../shared/data --output runs/bench-full
    """
    import shlex

    from ...config import DEFAULT_DATA_DIR
    from ...errors import SFTError
    from . import recipes as bench_module

    host = host_of(ctx)
    folder = Path(recipes_dir) if recipes_dir else bench_module.RECIPES_DIR
    if list_only:
        for line in bench_module.describe(bench_module.find_recipes(folder)):
            click.echo(line)
        return
    recipes = bench_module.resolve(list(names), folder)
    data = Path(data_dir or DEFAULT_DATA_DIR)
    if not data.is_dir():
        raise SFTError(f"data folder not found: {data} (give --data-dir or set SFT_DATA_DIR)")
    parts = [*names, *(["--data-dir", data_dir] if data_dir else []), *(["--quick"] if quick else []),
             "--output", output, *(["--timeout-minutes", f"{timeout_minutes:g}"] if timeout_minutes else [])]
    results = bench_module.bench(recipes, host, data_dir=data.resolve(), output=Path(output), quick=quick,
                                 command="sft bench " + shlex.join(parts), timeout_minutes=timeout_minutes,
                                 echo=lambda line: click.echo(line, err=True))
    click.echo(f"results: {Path(output) / 'results.md'}")
    failed = [r["recipe"] for r in results if r["status"] != "ok"]
    if failed:
        click.echo(f"{len(failed)} of {len(results)} recipes failed: {', '.join(failed)}", err=True)
        ctx.exit(1)


@hookimpl
def sft_register_commands(cli):
    """Adds ``sft bench``."""
    cli.add_command(bench_command)
