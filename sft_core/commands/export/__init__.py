"""``sft export``: a trained model folder in a deployment format (ONNX), verified against PyTorch.

Attached to the CLI through ``sft_register_commands``, as a third-party command would be; onnx,
onnxscript and onnxruntime (the ``export`` extra) are imported only when the command runs.
``runtime`` runs an exported folder; ``sft eval``, ``sft predict`` and ``sft serve`` load one as
they load a PyTorch model folder.
"""

from __future__ import annotations

import json

import click

from ...host.hookspecs import hookimpl


def default_output(model_dir: str, quantize: str | None) -> str:
    """Where ``sft export`` writes without ``--output``: beside the model, as ``sft eval`` writes RUN/eval
    (RUN/model -> RUN/onnx, RUN/onnx-int8; another folder X -> X-onnx)."""
    from pathlib import Path

    folder = Path(model_dir.rstrip("/\\") or ".")
    name = "onnx" + (f"-{quantize}" if quantize else "")
    return str(folder.parent / name if folder.name == "model" else folder.with_name(f"{folder.name}-{name}"))


@click.command("export")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model folder written by `sft run` (RUN/model).")
@click.option("--format", "format_", type=click.Choice(["onnx"]), default="onnx", show_default=True, help="Export format.")
@click.option("--output", type=click.Path(file_okay=False),
              help="Folder to write (model.onnx, tokenizer, sft_task.json) [default: beside the model: RUN/onnx "
                   "for RUN/model, RUN/onnx-int8 when quantized].")
@click.option("--quantize", type=click.Choice(["int8"]), help="Quantize the weights dynamically with onnxruntime.")
@click.option("--data", help="Data file whose examples verify the export [default: the run's evaluation data, "
              "else the task's built-in sample].")
@click.option("--samples", default=64, show_default=True, type=click.IntRange(min=1), help="Examples to verify on.")
@click.option("--tolerance", default=1e-4, show_default=True, type=float,
              help="Largest absolute difference of the fp32 outputs from PyTorch's before the export fails.")
@click.option("--opset", type=int, help="ONNX opset version [default: the exporter's].")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --output folder.")
@click.pass_context
def export(ctx, model_dir, format_, output, quantize, data, samples, tolerance, opset, overwrite):
    """Export a trained model to ONNX, verify it against PyTorch on real inputs, optionally quantize it.

    \b
    Examples:
      sft export --model runs/sst2/model                  # writes runs/sst2/onnx
      sft export --model runs/sst2/model --quantize int8 --output exported/sst2-int8
      sft eval --model exported/sst2-int8 --data dev.tsv
      sft serve --model exported/sst2-int8
    """
    from .onnx import export_onnx

    host = ctx.find_root().obj
    output = output or default_output(model_dir, quantize)
    report = export_onnx(model_dir, output, host, quantize=quantize, data=data, samples=samples, tolerance=tolerance,
                         overwrite=overwrite, opset=opset, echo=lambda line: click.echo(line, err=True))
    click.echo(json.dumps({"output": output, **report}, indent=2))


@hookimpl
def sft_register_commands(cli):
    """Adds ``sft export``."""
    cli.add_command(export)
