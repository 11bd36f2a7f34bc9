"""Running a model folder written by ``sft export`` with onnxruntime, as tasks run a PyTorch model.

``OnnxModel`` is a ``torch.nn.Module`` without parameters whose ``forward(**inputs)`` feeds the
inputs the ONNX graph takes to an onnxruntime session and returns its outputs by name (``.logits``,
``.start_logits``), as torch tensors: a task's ``predict_step`` runs on it unchanged. This module
imports neither torch nor onnxruntime at import time (``is_onnx_folder`` is used on every load).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import SFTError

MODEL_FILE = "model.onnx"
EXPORT_KEY = "export"  # the section of sft_task.json that says how the folder was exported


def is_onnx_folder(folder) -> bool:
    return (Path(folder) / MODEL_FILE).is_file()


def export_info(folder) -> dict:
    info = json.loads((Path(folder) / "sft_task.json").read_text(encoding="utf-8"))
    return info.get(EXPORT_KEY) or {}


def session(path, threads: int | None = None):
    """An onnxruntime CPU session for ``path``, with a one-line error if onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SFTError("running an exported model needs onnxruntime: pip install 'sft-core[export]'") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    # onnxruntime's threads spin after each run by default, starving the torch threads that
    # post-process the outputs (a 32-row softmax then takes 10 ms on 2 cores)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


class Outputs(dict):
    """Model outputs by name, also as attributes (``out.logits``), like transformers' ModelOutput."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _build_class():
    import torch

    class OnnxModel(torch.nn.Module):
        """An exported model folder run by onnxruntime; see the module docstring."""

        backend = "onnx"

        def __init__(self, folder, threads: int | None = None):
            super().__init__()
            from transformers import AutoConfig

            folder = Path(folder)
            self.folder = folder
            info = export_info(folder)
            self.input_names = list(info.get("inputs") or [])
            self.output_names = list(info.get("outputs") or [])
            self.quantize = info.get("quantize")
            # the same number of threads as torch (torch.set_num_threads, e.g. by sft serve --threads)
            self.session = session(folder / MODEL_FILE, threads or torch.get_num_threads())
            if not self.input_names:
                self.input_names = [i.name for i in self.session.get_inputs()]
            if not self.output_names:
                self.output_names = [o.name for o in self.session.get_outputs()]
            self.config = AutoConfig.from_pretrained(folder)
            self.name_or_path = str(folder)

        def forward(self, **inputs):
            feed = {}
            for name in self.input_names:
                value = inputs.get(name)
                if value is None:
                    raise SFTError(f"the exported model in {self.folder} takes {name!r}, which the task did not give")
                feed[name] = value.detach().cpu().to(torch.int64).numpy()
            values = self.session.run(self.output_names, feed)
            return Outputs({n: torch.from_numpy(v) for n, v in zip(self.output_names, values)})

        def generate(self, *args, **kwargs):
            raise SFTError(f"{self.folder} is an exported (ONNX) model: generation is not exported")

    return OnnxModel


def __getattr__(name):  # OnnxModel is built on first use, so importing this module imports no torch
    if name == "OnnxModel":
        cls = _build_class()
        globals()["OnnxModel"] = cls
        return cls
    raise AttributeError(name)

