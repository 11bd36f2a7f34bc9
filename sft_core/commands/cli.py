"""The ``sft`` command line. Imports no torch: the heavy work lives in ``runner``, loaded lazily."""

from __future__ import annotations

import json
import sys

import click

from .. import api
from ..errors import SFTError, TrainingInterrupted
from ..host.manager import PluginHost
from .common import host_of


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
    host = host_of(ctx)
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
    _say_what_next(config, host)


def _say_what_next(config, host) -> None:
    """Where the trained model is, and the commands that use it (on stderr: stdout is the summary)."""
    from pathlib import Path

    from ..task import roles

    model = Path(config.output_dir) / "model"
    if not model.is_dir():
        return
    task = roles(host.tasks[config.task].factory(config))
    lines = [f"the model is in {model}; next:"]
    if task.read_messages is not None:
        lines.append(f"  sft chat --model {model}                 # talk to it in the terminal")
    lines.append(f"  sft predict --model {model} TEXT...")
    lines.append(f"  sft eval --model {model} --data FILE     # score it on other data")
    lines.append(f"  sft serve --model {model}                # an HTTP API")
    if not task.generative:
        lines.append(f"  sft export --model {model}               # ONNX for production")
    click.echo("\n".join(lines), err=True)


@cli.command("eval")
@click.option("--model", "model_dir", required=True, help="Model folder written by `sft run` (RUN/model); with --task, "
              "also a model that was never fine-tuned (alias, folder or hub id): its zero-shot baseline.")
@click.option("--task", "task_name", help="Task to evaluate an untrained model on (a saved model knows its task), or a "
              "saved model of another task as that task's starting point (e.g. an instruct model on preference pairs).")
@click.option("--config", "configs", multiple=True, type=click.Path(), help="YAML config file (e.g. the recipe); repeatable.")
@click.option("--data", help="Evaluation data file, or a dataset as hf:NAME[:CONFIG]@SPLIT (default: data.eval of --config).")
@click.option("--output-dir", help="Where eval_results.json and predictions go (default: next to the model, in eval/ "
              "for the run's own evaluation data and eval-NAME/ for a data file NAME.EXT, one folder per file; "
              "for an untrained model OUTPUT_DIR/zero-shot, zero-shot-NAME).")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE", help="Set a config key, e.g. "
              "trainer.eval_batch_size=8 or data.max_eval_samples=100; repeatable.")
@click.argument("overrides", nargs=-1, metavar="[KEY=VALUE]...")
@click.pass_context
def eval_(ctx, model_dir, task_name, configs, data, output_dir, settings, overrides):
    """Evaluate a saved model (or, with --task, an untrained one) on a data file; prints and writes the metrics.

    The whole file is scored: the training run's data.max_eval_samples does not apply here, only
    limits given to this command (--set, KEY=VALUE or --config).
    """
    result = api.evaluation(model_dir, data, output_dir, task_name, configs, [*overrides, *settings], host_of(ctx))
    click.echo(json.dumps(result["metrics"], indent=2))
    again = " (replacing its earlier evaluation of the same data)" if result.get("replaced") else ""
    click.echo(f"written to {result['output_dir']}{again}", err=True)


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
    host = host_of(ctx)
    texts, fields = _named_inputs(texts)
    if not texts and not input_path and not fields:
        raise SFTError("nothing to predict: give TEXT arguments, named inputs (--NAME VALUE) or --input FILE")
    if sum(map(bool, (texts, input_path, fields))) > 1:
        raise SFTError("give either TEXT arguments, named inputs (--NAME VALUE) or --input FILE, not several")
    from .. import engine

    layers = api.config_layers((), list(settings))
    for record in engine.predict_saved(model_dir, list(texts), input_path, host, layers, fields=fields):
        click.echo(json.dumps(record, ensure_ascii=False))


@cli.command()
@click.pass_context
def tasks(ctx):
    """List the registered tasks: name, summary, providing distribution."""
    host = host_of(ctx)
    if not host.tasks:
        click.echo("no tasks registered (are the plugins disabled by SFT_LOAD_PLUGINS / SFT_DISABLE_PLUGINS?)")
    width = max([len(n) for n in host.tasks] + [4])
    for name in sorted(host.tasks):
        spec = host.tasks[name]
        click.echo(f"{name:<{width}}  {spec.summary}  [{spec.distribution or spec.provider}]")


@cli.command()
@click.pass_context
def plugins(ctx):
    """List the loaded plugins with their versions and hooks, and those that failed."""
    from ..task import CONTRACT_VERSION
    from ..version import __version__

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
