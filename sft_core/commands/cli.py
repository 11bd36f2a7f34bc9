"""The ``sft`` command line. Imports no torch: the heavy work lives in ``runner``, loaded lazily."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import api
from ..errors import SFTError, TrainingInterrupted
from ..host.manager import PluginHost


class _Group(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit, without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TrainingInterrupted as exc:  # a checkpoint was written: say where, exit as killed by the signal
            if exc.main_process:
                click.echo(str(exc), err=True)
            ctx.exit(exc.exit_code)
        except SFTError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted; checkpoints already written are kept (resume with --resume)", err=True)
            ctx.exit(130)


def _host(ctx) -> PluginHost:
    host = ctx.find_root().obj
    for warning in getattr(host, "warnings", ()):
        click.echo(f"warning: {warning}", err=True)
    for failed in host.failed:
        click.echo(f"warning: plugin {failed.name!r} ({failed.distribution or failed.module}) failed to load: "
                   f"{failed.error}", err=True)
    return host


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sft-core", prog_name="sft")
def cli():
    """Fine-tune pretrained transformers: one training loop, tasks as plugins.

    \b
    Examples:
      sft tasks
      sft run --task classification
      sft run --task classification --train train.tsv --eval dev.tsv trainer.lr=3e-5
      sft eval --model runs/classification/model --data dev.tsv
      sft predict --model runs/classification/model "a gripping, funny film"
    """


@cli.command()
@click.option("--task", help="Task to train (see `sft tasks`); may also come from a config file.")
@click.option("--config", "configs", multiple=True, type=click.Path(), help="YAML config file; repeatable, later files win.")
@click.option("--model", help="Model alias (minilm), local folder or hub id.")
@click.option("--train", help="Training data file, or hf:NAME[:CONFIG]@SPLIT (default: the task's built-in sample).")
@click.option("--eval", "eval_", help="Evaluation data file (or hf:NAME[:CONFIG]@SPLIT, a hub dataset).")
@click.option("--output-dir", help="Run folder for config, metrics, checkpoints and model (default runs/TASK).")
@click.option("--resume", is_flag=True, help="Continue from the latest checkpoint in the output folder.")
@click.option("--resume-from", type=click.Path(), help="Continue from this checkpoint folder.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier run in the output folder (its checkpoints, model, "
              "metrics, results and predictions; other files stay).")
@click.option("--print-config", is_flag=True, help="Print the resolved config and exit.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.pass_context
def run(ctx, task, configs, model, train, eval_, output_dir, resume, resume_from, overwrite, print_config, overrides):
    """Train and evaluate a task; KEY=VALUE pairs override config keys (e.g. trainer.lr=3e-5).

    An output folder that already holds a run is refused unless --resume or --overwrite is given.
    SIGINT (Ctrl-C) or SIGTERM write a checkpoint at the end of the current step and exit with
    130 or 143; --resume continues from it exactly.
    """
    host = _host(ctx)
    config = api.run_config(task, model, train, eval_, output_dir, configs, list(overrides), host,
                            source="command-line options")
    if print_config:
        click.echo(config.to_yaml(), nl=False)
        return
    result = api.train_config(config, host, resume=resume_from or resume, overwrite=overwrite)
    if not result["main_process"]:  # under torchrun, one summary is enough
        return
    click.echo(json.dumps({"output_dir": config.output_dir, **result["train"],
                           **{k if k.startswith("eval_") else f"eval_{k}": v for k, v in (result["eval"] or {}).items()}}, indent=2))


@cli.command("eval")
@click.option("--model", "model_dir", required=True, help="Model folder written by `sft run` (RUN/model); with --task, "
              "also a model that was never fine-tuned (alias, folder or hub id): its zero-shot baseline.")
@click.option("--task", "task_name", help="Task to evaluate an untrained model on (a saved model knows its task).")
@click.option("--config", "configs", multiple=True, type=click.Path(), help="YAML config file (e.g. the recipe); repeatable.")
@click.option("--data", help="Evaluation data file, or a dataset as hf:NAME[:CONFIG]@SPLIT (default: data.eval of --config).")
@click.option("--output-dir", help="Where eval_results.json and predictions go (default: next to the model, in eval/; "
              "for an untrained model OUTPUT_DIR/zero-shot).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Set a config key, e.g. "
              "trainer.eval_batch_size=8 or data.max_eval_samples=100; repeatable.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.pass_context
def eval_(ctx, model_dir, task_name, configs, data, output_dir, settings, overrides):
    """Evaluate a saved model (or, with --task, an untrained one) on a data file; prints and writes the metrics.

    The whole file is scored: the training run's data.max_eval_samples does not apply here, only
    limits given to this command (--set, KEY=VALUE or --config).
    """
    result = api.evaluation(model_dir, data, output_dir, task_name, configs, [*overrides, *settings], _host(ctx))
    click.echo(json.dumps(result["metrics"], indent=2))
    click.echo(f"written to {result['output_dir']}", err=True)


def _named_inputs(args) -> tuple[list[str], dict[str, list[str]]]:
    """Split ``sft predict`` arguments into TEXTs and ``--NAME VALUE`` / ``--NAME=VALUE`` inputs."""
    texts: list[str] = []
    fields: dict[str, list[str]] = {}
    args = list(args)
    while args:
        arg = args.pop(0)
        if not arg.startswith("--") or len(arg) == 2:
            texts.append(arg)
            continue
        name, sep, value = arg[2:].partition("=")
        if not sep:
            if not args:
                raise SFTError(f"option --{name} needs a value")
            value = args.pop(0)
        fields.setdefault(name.replace("-", "_"), []).append(value)
    return texts, fields


# Options the command does not declare (e.g. --question, --context) are the task's named inputs.
@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model folder written by `sft run`.")
@click.option("--input", "input_path", type=click.Path(), help="File of inputs in the task's format (else TEXT arguments).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Set a config key, e.g. "
              "trainer.eval_batch_size=8 or a task option; repeatable.")
@click.argument("texts", nargs=-1)
@click.pass_context
def predict(ctx, model_dir, input_path, settings, texts):
    """Predict for TEXT arguments, named inputs or an input file; prints one JSON line per input.

    Every TEXT is predicted (a=b too: config keys are set with --set only), and every input of
    --input FILE, whatever sample limits the model was trained with. Named inputs are --NAME VALUE
    options a task declares, e.g. for qa:
    sft predict --model runs/qa/model --question "Who?" --context "..."
    """
    host = _host(ctx)
    texts, fields = _named_inputs(texts)
    if not texts and not input_path and not fields:
        raise SFTError("nothing to predict: give TEXT arguments, named inputs (--NAME VALUE) or --input FILE")
    if sum(map(bool, (texts, input_path, fields))) > 1:
        raise SFTError("give either TEXT arguments, named inputs (--NAME VALUE) or --input FILE, not several")
    from ..engine import run as runner

    layers = api.config_layers((), list(settings))
    for record in runner.predict_saved(model_dir, list(texts), input_path, host, layers, fields=fields):
        click.echo(json.dumps(record, ensure_ascii=False))


@cli.command()
@click.pass_context
def tasks(ctx):
    """List the registered tasks: name, summary, providing distribution."""
    host = _host(ctx)
    if not host.tasks:
        click.echo("no tasks registered (are the plugins disabled by SFT_LOAD_PLUGINS / SFT_DISABLE_PLUGINS?)")
    width = max([len(n) for n in host.tasks] + [4])
    for name in sorted(host.tasks):
        spec = host.tasks[name]
        click.echo(f"{name:<{width}}  {spec.summary}  [{spec.distribution or spec.provider}]")


@cli.command()
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
def bench(ctx, names, data_dir, quick, output, recipes_dir, timeout_minutes, list_only):
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

    from . import bench as bench_module
    from ..config import DEFAULT_DATA_DIR

    host = _host(ctx)
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


@cli.command()
@click.pass_context
def plugins(ctx):
    """List the loaded plugins with their versions and hooks, and those that failed."""
    from .. import CONTRACT_VERSION, __version__

    host = ctx.find_root().obj
    click.echo(f"sft-core {__version__}, plugin contract {CONTRACT_VERSION}")
    for info in host.plugins:
        where = f"{info.distribution} {info.version}" if info.distribution else info.module
        if info.error:
            click.echo(f"{info.name}  ({where})  FAILED: {info.error}")
        else:
            contract = f"  contract {info.contract}" if info.contract else ""
            click.echo(f"{info.name}  ({where})  hooks: {', '.join(info.hooks) or '-'}{contract}")


def main(argv=None) -> None:
    try:
        host = PluginHost()
    except SFTError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    host.register_commands(cli)
    cli.main(args=argv, obj=host, prog_name="sft")


if __name__ == "__main__":
    main()
