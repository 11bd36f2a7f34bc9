"""Exporting a trained model to a deployment format, verified before anything is written.

``onnx``: encoders (and any model a task calls as ``model(**inputs)``), run by onnxruntime, optionally
int8. ``gguf``: causal LMs, one file for llama.cpp and Ollama, read back by transformers and, where
installed, by llama.cpp (``llamacpp``), with an Ollama Modelfile (``ollama``). ``sft export`` and
``sft_core.export`` call ``export``; onnx, onnxruntime and gguf are imported only when it runs.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ...errors import SFTError

FORMATS = {"onnx": ("int8",), "gguf": ("f16", "bf16", "q8_0", "q4_0")}


def default_output(model_dir: str, format: str = "onnx", quantize: str | None = None) -> str:
    """Where an export is written without ``output``: beside the model, as ``sft eval`` writes RUN/eval
    (RUN/model -> RUN/onnx, RUN/onnx-int8, RUN/gguf-f16, ...; another folder X -> X-onnx, X-gguf-f16)."""
    folder = Path(model_dir.rstrip("/\\") or ".")
    if format == "gguf":
        quantize = quantize or "f16"
    name = format + (f"-{quantize}" if quantize else "")
    return str(folder.parent / name if folder.name == "model" else folder.with_name(f"{folder.name}-{name}"))


def export(model_dir: str, host, format: str = "onnx", output: str | None = None, quantize: str | None = None,
           data: str | None = None, samples: int | None = None, overwrite: bool = False,
           tolerance: float | None = None, opset: int | None = None, min_agreement: float | None = None,
           llama_cpp: bool | None = None, echo=lambda line: print(line, file=sys.stderr)) -> dict:
    """Export ``model_dir``; returns the report (also in ``OUTPUT/sft_task.json``) with ``output`` first."""
    if format not in FORMATS:
        raise SFTError(f"export format {format!r}: sft exports {' or '.join(FORMATS)}")
    if quantize is not None and quantize not in FORMATS[format]:
        other = next((f.upper() for f, q in FORMATS.items() if quantize in q), None)
        raise SFTError(f"quantize {quantize!r}: {format} exports take {', '.join(FORMATS[format])}"
                       + (f" ({quantize} is an {other} quantization)" if other else ""))
    output = output or default_output(model_dir, format, quantize)
    if format == "gguf":
        if tolerance is not None or opset is not None:
            raise SFTError("tolerance and opset belong to ONNX exports; GGUF exports take min_agreement")
        from .gguf import DEFAULT_QUANT, export_gguf

        report = export_gguf(model_dir, output, host, quantize=quantize or DEFAULT_QUANT, data=data,
                             samples=samples or 16, min_agreement=min_agreement, overwrite=overwrite,
                             llama_cpp=llama_cpp, echo=echo)
    else:
        if min_agreement is not None or llama_cpp is not None:
            raise SFTError("min_agreement and llama_cpp belong to GGUF exports (format='gguf')")
        from .onnx import TOLERANCE, export_onnx

        report = export_onnx(model_dir, output, host, quantize=quantize, data=data, samples=samples or 64,
                             tolerance=TOLERANCE if tolerance is None else tolerance, overwrite=overwrite,
                             opset=opset, echo=echo)
    return {"output": output, **report}
