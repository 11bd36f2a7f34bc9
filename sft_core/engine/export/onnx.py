"""``sft export --format onnx``: a model folder written by ``sft run`` as ONNX, verified, optionally int8.

The graph comes from ``torch.onnx.export`` (the torch.export-based exporter), with dynamic batch
and sequence axes. optimum-onnx, the Hugging Face exporter, pins transformers below 4.58 while sft
runs on transformers 5, so it is not used. The inputs and outputs exported are the ones the task
itself uses: the task's ``predict_step`` runs once on a recording wrapper, which notes the tensors
it passes to the model and the outputs the model returns. A task whose predictions are generated
(``model.generate``: translation, instruct) is refused with a clear message, since generation with
a key/value cache is not exported.

Verification is built in: PyTorch and onnxruntime run the same batches of real inputs (the
evaluation data of the run, or ``--data``), and the largest absolute difference of any output
must stay within the tolerance (1e-4 for fp32) or the export fails and nothing is written. With
``--quantize int8`` the weights are quantized dynamically by onnxruntime after that check, and
the difference of the int8 model and how many predictions it changes are measured and reported.

The folder is written next to its destination and renamed into place only when complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ..checkpoint import TASK_FILE
from ..files import staged_dir
from ...errors import SFTError
from ...models.onnx_runtime import EXPORT_KEY, MODEL_FILE, session

TOLERANCE = 1e-4
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


class _Generates(Exception):
    pass


def _recorder(model):
    """``model`` wrapped so that a task's ``predict_step`` can run on it while its calls are noted."""
    from ...models.wrapping import model_wrapper

    class Recorder(model_wrapper()):
        def __init__(self):
            super().__init__(model)
            self.calls: list[tuple[dict, object]] = []

        def forward(self, **kwargs):
            out = self.inner(**kwargs)
            self.calls.append((kwargs, out))
            return out

        def generate(self, *args, **kwargs):
            raise _Generates()

    return Recorder()


def _tensor_outputs(out) -> dict:
    import torch

    items = out.items() if hasattr(out, "items") else enumerate(out)
    return {str(k): v for k, v in items if isinstance(v, torch.Tensor) and k != "loss"}


def _graph_wrapper(model, input_names: list[str], output_names: list[str]):
    import torch

    class Graph(torch.nn.Module):
        """The model with the task's inputs as named arguments and its outputs as a tuple."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None):
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                     "position_ids": position_ids}
            out = self.model(**{k: given[k] for k in input_names})
            return tuple(out[k] for k in output_names)

    return Graph().eval()


def _verification_examples(task, config, data: str | None, samples: int) -> tuple[list[dict], str]:
    from ..sources import resolve as resolve_source

    source = data or config.data.eval
    examples = task.load("eval", resolve_source(source))
    if not examples:
        raise SFTError(f"no examples to verify the export on in {source or 'the built-in sample'}")
    return examples[:samples], source or "the task's built-in sample"


def _batches(task, config, tokenizer, examples, batch_size: int):
    from ..batching import build_features, eval_batches, feature_lengths
    from ..evaluation import rows

    features = build_features(task, config, tokenizer, examples, "predict", use_cache=False)
    return features, [task.collate(rows(features, b)) for b in eval_batches(feature_lengths(features), batch_size)]


def export_onnx(model_dir: str, output: str, host, quantize: str | None = None, data: str | None = None,
                samples: int = 64, tolerance: float = TOLERANCE, overwrite: bool = False, opset: int | None = None,
                echo=lambda line: print(line, file=sys.stderr)) -> dict:
    """Export ``model_dir`` to ``output``; returns the report written into ``output/sft_task.json``.

    The steps: load the model as PyTorch runs it; record the call the task's ``predict_step`` makes
    (its inputs and outputs are what is exported); export; verify onnxruntime against PyTorch on real
    examples; quantize (int8) and verify again; write the folder whole or not at all.
    """
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise SFTError(f"sft export needs {exc.name}: pip install 'sft-core[export]'") from None
    import torch

    from ... import engine

    source, out = Path(model_dir), Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SFTError(f"{out} exists and is not empty; give another --output or --overwrite")
    if source.resolve() == out.resolve():
        raise SFTError("--output must be another folder than --model")
    config, tokenizer, model = _load_for_export(source, host)
    # a task whose model was never built by it (as when onnxruntime runs the export) predicts from plain outputs
    _, _, fresh = engine.load_saved(str(source), host, [])
    fresh_tokenizer = fresh.load_tokenizer(str(source))
    examples, where = _verification_examples(fresh, config, data, samples)
    features, batches = _batches(fresh, config, fresh_tokenizer, examples, min(16, config.trainer.eval_batch_size))
    kwargs, inputs, outputs = _recorded_call(fresh, config, model, batches[0], source)
    echo(f"exporting {source} (task {config.task}): inputs {', '.join(inputs)} -> outputs {', '.join(outputs)}")

    with staged_dir(out) as work:
        started = time.perf_counter()
        fp32 = work / ("model-fp32.onnx" if quantize else MODEL_FILE)
        _export_graph(model, {k: kwargs[k] for k in inputs}, inputs, outputs, fp32, opset)
        report = {"format": "onnx", "quantize": quantize, "inputs": inputs, "outputs": outputs,
                  "opset": opset, "exported_from": str(source), "torch": torch.__version__,
                  "export_seconds": round(time.perf_counter() - started, 2)}
        fp32_check = _compare(model, session(fp32), batches, inputs, outputs)
        report["verification"] = {"examples": len(examples), "data": where, "tolerance": tolerance,
                                  "fp32_max_abs_diff": fp32_check}
        echo(f"verified on {len(examples)} examples of {where}: max |onnxruntime - pytorch| = {fp32_check:.3g} "
             f"(tolerance {tolerance:g})")
        if not fp32_check <= tolerance:
            raise SFTError(f"the exported model's outputs differ from PyTorch's by up to {fp32_check:.3g}, more than "
                           f"the tolerance {tolerance:g}; nothing was written")
        if quantize == "int8":
            _quantize_int8(fp32, work / MODEL_FILE)
            report["verification"]["int8_max_abs_diff"] = _compare(model, session(work / MODEL_FILE), batches,
                                                                   inputs, outputs)
        elif quantize is not None:
            raise SFTError(f"--quantize {quantize!r}: only int8 is supported")
        report["size_mb"] = round((work / MODEL_FILE).stat().st_size / 2**20, 1)
        _write_folder(work, source, model, tokenizer, report)
        if quantize:  # how many predictions int8 changes, from the task's own postprocess
            agree = _prediction_agreement(fresh, config, fresh_tokenizer, examples, model, work, host)
            report["verification"]["int8_same_predictions"] = agree
            _write_folder(work, source, model, tokenizer, report)
            echo(f"int8: max |onnxruntime - pytorch| = {report['verification']['int8_max_abs_diff']:.3g}, "
                 f"same prediction for {agree:.1%} of the examples")
    return report


def _load_for_export(source: Path, host):
    """(config, tokenizer, model): the saved model as PyTorch runs it, adapters merged, in fp32 on the CPU,
    its last layer computing every position (as an exported model does)."""
    import torch

    from ... import engine
    from ...models import adapters, last_layer

    engine.quiet_libraries()
    _, config, task = engine.load_saved(str(source), host, [])
    if (source / MODEL_FILE).is_file():
        raise SFTError(f"{source} is already an exported (ONNX) model; export the folder written by `sft run`")
    tokenizer, model = engine.load_model(task, str(source))
    if adapters.is_peft_model(model):
        model = model.merge_and_unload()
    last_layer.uninstall(model)
    return config, tokenizer, model.to("cpu", torch.float32).eval()


def _recorded_call(task, config, model, batch: dict, source: Path) -> tuple[dict, list[str], list[str]]:
    """(the arguments, the input names, the output names) of the model call ``predict_step`` makes."""
    import torch

    recorder = _recorder(model)
    with torch.inference_mode():
        try:
            task.predict_step(recorder, batch)
        except _Generates:
            raise SFTError(f"task {config.task!r} generates its predictions (model.generate); ONNX export of "
                           "generation with a key/value cache is not supported. Export the causal LM for llama.cpp "
                           f"and Ollama with: sft export --model {source} --format gguf; or serve it: sft serve "
                           f"--model {source}") from None
    if not recorder.calls:
        raise SFTError(f"task {config.task!r}: predict_step did not call the model; nothing to export")
    kwargs, sample_out = recorder.calls[0]
    inputs = [k for k in INPUT_NAMES if isinstance(kwargs.get(k), torch.Tensor)]
    other = sorted(set(kwargs) - set(inputs))
    if other:
        raise SFTError(f"task {config.task!r} passes {', '.join(other)} to the model; sft export takes "
                       f"{', '.join(INPUT_NAMES)}")
    return kwargs, inputs, list(_tensor_outputs(sample_out))


def _export_graph(model, example: dict, inputs: list[str], outputs: list[str], path: Path, opset: int | None) -> None:
    """torch.export, then torch.onnx, with dynamic batch and sequence axes."""
    import logging
    import warnings

    import torch

    graph = _graph_wrapper(model, inputs, outputs)
    positions = getattr(model.config, "max_position_embeddings", None)  # the sequence axis cannot pass it
    batch_dim = torch.export.Dim("batch", max=4096)
    seq_dim = torch.export.Dim("sequence", max=positions) if positions else torch.export.Dim("sequence")
    dynamic = {k: ({0: batch_dim, 1: seq_dim} if example[k].dim() == 2 else {0: batch_dim}) for k in inputs}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed" notes
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        try:
            exported = torch.export.export(graph, (), kwargs=example, dynamic_shapes=dynamic, strict=False)
            torch.onnx.export(exported, (), str(path), kwargs=example, dynamo=True, external_data=False,
                              input_names=inputs, output_names=outputs, opset_version=opset)
        except Exception as exc:  # the exporter's own errors are long; the first line says what failed
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SFTError(f"torch.onnx could not export this model ({type(model).__name__}): {first}") from None


def _quantize_int8(fp32: Path, target: Path) -> None:
    """Dynamic int8 quantization with per-channel scales: one per output row of each weight matrix,
    which keeps a fine-tuned head's decisions far better than one scale per tensor."""
    import logging

    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level, root.level = root.level, logging.ERROR  # its advice to pre-process concerns static quantization
    try:
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    fp32.unlink()


class _quiet_exporter:
    """torch.onnx prints its progress on stdout; keep it for the log of a failure only."""

    def __enter__(self):
        import contextlib
        import io

        self.buffer = io.StringIO()
        self.redirect = contextlib.redirect_stdout(self.buffer)
        self.redirect.__enter__()
        return self

    def __exit__(self, *exc):
        self.redirect.__exit__(*exc)
        return False


def _compare(model, sess, batches, inputs: list[str], outputs: list[str]) -> float:
    """Largest absolute difference of any output over ``batches`` between PyTorch and onnxruntime."""
    import numpy as np
    import torch

    worst = 0.0
    with torch.inference_mode():
        for batch in batches:
            feed = {k: batch[k] for k in inputs}
            reference = _tensor_outputs(model(**feed))
            got = sess.run(outputs, {k: v.to(torch.int64).numpy() for k, v in feed.items()})
            for name, value in zip(outputs, got):
                worst = max(worst, float(np.abs(value - reference[name].float().numpy()).max()))
    return worst


def _write_folder(work: Path, source: Path, model, tokenizer, report: dict) -> None:
    info = json.loads((source / TASK_FILE).read_text(encoding="utf-8"))
    info[EXPORT_KEY] = report
    tokenizer.save_pretrained(work)
    model.config.save_pretrained(work)
    (work / TASK_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _prediction_agreement(task, config, tokenizer, examples, model, folder: Path, host) -> float:
    """Share of ``examples`` whose formatted prediction is the same from ``folder`` as from PyTorch."""
    from ..evaluation import predict_features
    from ...engine import make_accelerator
    from ...models.onnx_runtime import OnnxModel

    accelerator = make_accelerator(config)
    features, _ = _batches(task, config, tokenizer, examples, 16)

    def records(m):
        outputs = predict_features(accelerator, task, m, features, config.trainer.eval_batch_size)
        return [json.dumps(task.format_prediction(p, e), sort_keys=True, default=str)
                for p, e in zip(task.postprocess(outputs, features, examples), examples)]

    def labels(record_json: str) -> str:  # scores move under int8; compare what was predicted
        record = json.loads(record_json)
        return json.dumps({k: v for k, v in record.items() if "score" not in k and "probabilit" not in k},
                          sort_keys=True, default=str)

    mine, theirs = records(OnnxModel(folder)), records(model)
    return sum(labels(a) == labels(b) for a, b in zip(mine, theirs)) / len(examples)
