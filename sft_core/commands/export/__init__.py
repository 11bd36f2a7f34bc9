"""``sft export``: a trained model folder in a deployment format, verified before it is written: ONNX
(encoders, run by onnxruntime) or GGUF (causal LMs, run by llama.cpp and Ollama).

Attached to the CLI through ``sft_register_commands``, as a third-party command would be; onnx,
onnxscript and onnxruntime (the ``export`` extra) or gguf (the ``llm`` extra) are imported only when
the command runs.
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


ONNX_QUANTS, GGUF_QUANTS = ("int8",), ("f16", "bf16", "q8_0", "q4_0")


@click.command("export")
@click.option("--model", "model_dir", required=True,
              help="Model folder written by `sft run` (RUN/model); for GGUF also a causal LM folder or an alias.")
@click.option("--format", "format_", type=click.Choice(["onnx", "gguf"]), default="onnx", show_default=True,
              help="onnx: encoders, run by onnxruntime; gguf: causal LMs, run by llama.cpp and Ollama.")
@click.option("--output", type=click.Path(file_okay=False),
              help="Folder to write [default: beside the model: RUN/onnx (RUN/onnx-int8) or RUN/gguf-f16 "
                   "(RUN/gguf-q8_0, ...) for RUN/model].")
@click.option("--quantize", type=click.Choice([*ONNX_QUANTS, *GGUF_QUANTS]),
              help="ONNX: int8 (dynamic, onnxruntime). GGUF: f16 (default), bf16, q8_0 or q4_0.")
@click.option("--data", help="Data file whose examples verify the export [default: the run's evaluation data, "
              "else the task's built-in sample].")
@click.option("--samples", type=click.IntRange(min=1), help="Examples to verify on [default: 64 for ONNX, 16 for GGUF].")
@click.option("--tolerance", default=1e-4, show_default=True, type=float,
              help="ONNX: largest absolute difference of the fp32 outputs from PyTorch's before the export fails.")
@click.option("--min-agreement", type=click.FloatRange(0, 1),
              help="GGUF: least share of positions whose top token must equal PyTorch's [default: 0.9 for q8_0, 0.5 "
                   "for q4_0; f16 and bf16: every position but near-ties, where PyTorch's two best are within 0.1 "
                   "logits].")
@click.option("--llama-cpp/--no-llama-cpp", "llama_cpp", default=None,
              help="GGUF: require (or skip) llama.cpp's own check [default: run it where llama-cpp-python is installed].")
@click.option("--opset", type=int, help="ONNX opset version [default: the exporter's].")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty --output folder.")
@click.pass_context
def export(ctx, model_dir, format_, output, quantize, data, samples, tolerance, min_agreement, llama_cpp, opset,
           overwrite):
    """Export a trained model, verified before anything is written: ONNX for encoders (checked against
    PyTorch by onnxruntime, optionally int8), GGUF for causal LMs (read back by transformers and, where
    installed, by llama.cpp; with an Ollama Modelfile).

    \b
    Examples:
      sft export --model runs/sst2/model                  # writes runs/sst2/onnx
      sft export --model runs/sst2/model --quantize int8 --output exported/sst2-int8
      sft serve --model exported/sst2-int8
      sft export --model runs/chat/model --format gguf --quantize q8_0   # writes runs/chat/gguf-q8_0
      ollama create my-model -f runs/chat/gguf-q8_0/Modelfile
    """
    host = ctx.find_root().obj
    echo = lambda line: click.echo(line, err=True)  # noqa: E731
    if format_ == "gguf":
        from .gguf import DEFAULT_QUANT, default_output as gguf_output, export_gguf

        if quantize in ONNX_QUANTS:
            raise click.BadParameter(f"{quantize} is an ONNX quantization; GGUF takes {', '.join(GGUF_QUANTS)}",
                                     param_hint="--quantize")
        quantize = quantize or DEFAULT_QUANT
        output = output or gguf_output(model_dir, quantize)
        report = export_gguf(model_dir, output, host, quantize=quantize, data=data, samples=samples or 16,
                             min_agreement=min_agreement, overwrite=overwrite, llama_cpp=llama_cpp, echo=echo)
    else:
        from .onnx import export_onnx

        if quantize in GGUF_QUANTS:
            raise click.BadParameter(f"{quantize} is a GGUF quantization; ONNX takes {', '.join(ONNX_QUANTS)} "
                                     "(for a causal LM, add --format gguf)", param_hint="--quantize")
        if min_agreement is not None or llama_cpp is not None:
            raise click.BadParameter("--min-agreement and --llama-cpp belong to --format gguf", param_hint="--format")
        output = output or default_output(model_dir, quantize)
        report = export_onnx(model_dir, output, host, quantize=quantize, data=data, samples=samples or 64,
                             tolerance=tolerance, overwrite=overwrite, opset=opset, echo=echo)
    click.echo(json.dumps({"output": output, **report}, indent=2))


@hookimpl
def sft_register_commands(cli):
    """Adds ``sft export``."""
    cli.add_command(export)
