"""``sft export``: a trained model folder in a deployment format, verified before it is written: ONNX
(encoders, run by onnxruntime) or GGUF (causal LMs, run by llama.cpp and Ollama).

Attached to the CLI through ``sft_register_commands``, as a third-party command would be. The
command checks its options and calls ``sft_core.export`` (the exporters are in
``sft_core.engine.export``); onnx, onnxscript and onnxruntime (the ``export`` extra) or gguf (the
``llm`` extra) are imported only when it runs. ``sft eval``, ``sft predict`` and ``sft serve`` load
an ONNX folder as they load a PyTorch model folder; a GGUF folder is for llama.cpp and Ollama.
"""

from __future__ import annotations

import json

import click

from ...host.hookspecs import hookimpl

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
    from ...api import export as export_model

    if quantize is not None:  # the option names its mistake as a usage error (exit 2), before anything loads
        wrong = ONNX_QUANTS if format_ == "gguf" else GGUF_QUANTS
        if quantize in wrong:
            raise click.BadParameter(
                f"{quantize} is an {'ONNX' if format_ == 'gguf' else 'GGUF'} quantization; {format_.upper()} takes "
                f"{', '.join(GGUF_QUANTS if format_ == 'gguf' else ONNX_QUANTS)}"
                + ("" if format_ == "gguf" else " (for a causal LM, add --format gguf)"), param_hint="--quantize")
    if format_ == "onnx" and (min_agreement is not None or llama_cpp is not None):
        raise click.BadParameter("--min-agreement and --llama-cpp belong to --format gguf", param_hint="--format")
    report = export_model(model_dir, format=format_, output=output, quantize=quantize, data=data, samples=samples,
                          overwrite=overwrite, tolerance=tolerance if format_ == "onnx" else None,
                          opset=opset, min_agreement=min_agreement, llama_cpp=llama_cpp,
                          host=ctx.find_root().obj, echo=lambda line: click.echo(line, err=True))
    click.echo(json.dumps(report, indent=2))


@hookimpl
def sft_register_commands(cli):
    """Adds ``sft export``."""
    cli.add_command(export)
