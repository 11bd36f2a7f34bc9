"""A saved model loaded once for many predictions: what ``sft predict`` and ``sft serve`` share.

``Predictor(model_dir).predict(inputs)`` returns, for each input, the record ``sft predict`` prints
for it (the task's ``format_prediction``), so a script, the command line and the server always
agree. Inputs are texts, or ``{field: text}`` records for a task with named ``input_fields`` (qa:
``{"question": ..., "context": ...}``). A model folder written by ``sft run`` and one written by
``sft export`` (ONNX, run by onnxruntime) load the same way.

For generative tasks (those with ``prediction_text``) generation can be steered per call:
``GenerationSettings`` (length limit, sampling) and a ``streamer`` (transformers' streamer API)
reach the model's ``generate`` whatever arguments the task passes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import SFTError
from ..task import roles


@dataclass(frozen=True)
class GenerationSettings:
    """Per-request generation settings; ``None`` keeps what the task's decoding does."""

    max_new_tokens: int | None = None
    temperature: float | None = None  # 0 or None: the task's decoding (greedy or beam); > 0 samples
    top_p: float | None = None
    seed: int | None = None

    def generate_kwargs(self, streaming: bool) -> dict:
        kwargs: dict[str, Any] = {}
        if self.max_new_tokens is not None:
            kwargs["max_new_tokens"] = self.max_new_tokens
        if self.temperature:
            kwargs.update(do_sample=True, temperature=self.temperature, num_beams=1, top_p=self.top_p or 1.0)
        if streaming:  # transformers' streamers follow one sequence: beam search cannot stream
            kwargs.update(num_beams=1, early_stopping=False)
        return kwargs


def _stop_ids(model, kwargs: dict) -> set[int]:
    ids = kwargs.get("eos_token_id")
    if ids is None:
        ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    pad = kwargs.get("pad_token_id", getattr(getattr(model, "generation_config", None), "pad_token_id", None))
    return set(ids) | ({pad} if pad is not None else set())


def _steered(model, settings: GenerationSettings | None, streamer, record: list | None = None):
    """``model`` with ``generate`` taking ``settings`` and ``streamer`` on top of the task's arguments;
    with ``record``, each ``generate`` call appends one (new tokens, stopped by the length limit) per row."""
    from ..models.wrapping import model_wrapper

    extra = (settings or GenerationSettings()).generate_kwargs(streamer is not None)
    if streamer is not None:
        extra["streamer"] = streamer
    if not extra and record is None:
        return model

    class Steered(model_wrapper()):
        def generate(self, *args, **kwargs):
            kwargs.update(extra)
            if kwargs.get("num_beams", 1) == 1:  # beam-only settings would only draw warnings
                kwargs.pop("early_stopping", None)
                kwargs.pop("length_penalty", None)
            out = self.inner.generate(*args, **kwargs)
            if record is not None:
                # decoder-only outputs repeat the prompt; encoder-decoder ones start with the decoder start token
                start = 1 if getattr(self.inner.config, "is_encoder_decoder", False) else kwargs["input_ids"].shape[1]
                limit = kwargs.get("max_new_tokens") or getattr(self.inner.generation_config, "max_new_tokens", None)
                stops = _stop_ids(self.inner, kwargs)
                calls = []
                for row in out[:, start:].tolist():
                    n = next((i for i, t in enumerate(row) if t in stops), len(row))
                    calls.append((n, limit is not None and n >= limit))
                record.append(calls)
            return out

    return Steered(model)


class Predictor:
    """A model folder written by ``sft run`` (or ``sft export``), loaded once.

    ``host`` is a ``PluginHost`` (default: the installed plugins); ``layers`` are config layers
    (source, {key: value}) applied on top of the saved config, e.g. ``trainer.max_length``.
    """

    def __init__(self, model_dir: str, host=None, layers: Iterable[tuple[str, dict]] = (), batch_size: int | None = None):
        from ..host.manager import PluginHost
        from .loading import load_model, load_saved, quiet_libraries
        from .precision import make_accelerator

        quiet_libraries()
        self.model_dir = str(model_dir)
        self.host = host if host is not None else PluginHost()
        _, self.config, self.task = load_saved(self.model_dir, self.host, list(layers))
        self.accelerator = make_accelerator(self.config)
        self.tokenizer, self.model = load_model(self.task, self.model_dir)
        self.roles = roles(self.task)
        self.model.to(self.accelerator.device)
        self.model.eval()
        self.batch_size = batch_size or self.config.trainer.eval_batch_size

    # --- what the model takes -------------------------------------------------------------

    @property
    def task_name(self) -> str:
        return self.config.task

    @property
    def input_fields(self) -> tuple[str, ...]:
        return self.roles.input_fields

    @property
    def generative(self) -> bool:
        """Whether predictions are generated text (the OpenAI-style routes of ``sft serve``)."""
        return self.roles.generative

    @property
    def continuous_batching(self) -> bool:
        """Whether generation runs with continuous batching (a task that plans it, a model it runs)."""
        from .generation import unsupported

        return self.roles.generation_plan is not None and unsupported(self.model) is None

    @property
    def backend(self) -> str:
        return getattr(self.model, "backend", "pytorch")

    def examples(self, inputs: list) -> list[dict]:
        """Examples for ``inputs``: all texts, or all ``{field: text}`` records of the task's fields.

        Errors name the input (``inputs[3]``) and what was expected.
        """
        if not isinstance(inputs, list) or not inputs:
            raise SFTError("inputs: expected a non-empty list of inputs")
        fields = self.input_fields
        if all(isinstance(x, str) for x in inputs):
            if fields:
                raise SFTError(f"inputs: task {self.task_name!r} takes records with the fields "
                               f"{', '.join(fields)} (e.g. {{{', '.join(repr(f) + ': ...' for f in fields)}}}), not texts")
            return self.task.read_inputs(list(inputs))
        if all(isinstance(x, dict) for x in inputs):
            if not fields:
                raise SFTError(f"inputs: task {self.task_name!r} takes texts, not records")
            for n, record in enumerate(inputs):
                missing = [f for f in fields if not isinstance(record.get(f), str)]
                unknown = sorted(set(record) - set(fields))
                if missing or unknown:
                    what = (f"missing text field {missing[0]!r}" if missing else f"unknown field {unknown[0]!r}")
                    raise SFTError(f"inputs[{n}]: {what} (task {self.task_name!r} takes {', '.join(fields)})")
            return self.task.read_fields([dict(r) for r in inputs])
        bad = next((n for n, x in enumerate(inputs) if not isinstance(x, (str, dict))), None)
        if bad is not None:
            raise SFTError(f"inputs[{bad}]: expected a text or a record, got {type(inputs[bad]).__name__}")
        raise SFTError("inputs: give all texts or all records, not both")

    def input_tokens(self, inputs: list, tokenizer=None) -> list[int | None]:
        """How many tokens each input takes before truncation (a record's texts as a pair), None
        for every input when the task reads long inputs in windows (``long_inputs = "windows"``:
        NER, QA), which loses nothing. ``tokenizer``: another copy of the model's, for a thread
        other than the one predicting (a tokenizer's truncation settings are shared state)."""
        if self.roles.long_inputs == "windows":
            return [None] * len(inputs)
        tokenizer = tokenizer or self.tokenizer
        counts = []
        for item in inputs:
            texts = [item] if isinstance(item, str) else [item[f] for f in self.input_fields]
            counts.append(len(tokenizer(*texts[:2], truncation=False, verbose=False)["input_ids"]))
        return counts

    # --- predicting -----------------------------------------------------------------------

    def predict_examples(self, examples: list[dict], generation: GenerationSettings | None = None,
                         streamer=None, lengths: list | None = None) -> list:
        """Task predictions (what ``postprocess`` returns) for ``examples``, in order.

        With ``lengths`` (a list), generative tasks append per example (tokens generated, whether
        generation stopped at the length limit rather than at an end token). A task that plans its
        generation (contract 2.3) is generated with continuous batching, except with a ``streamer``
        (transformers' streamer API, which follows ``model.generate``).
        """
        if not examples:
            return []
        features, plan = self.plan_generation(examples) if streamer is None else (None, None)
        if plan is not None:
            requests = self.generation_requests(plan, generation)
            self.continuous_batcher().generate_all(requests)
            failed = next((r for r in requests if r.finish_reason == "error"), None)
            if failed is not None:
                raise failed.error
            if lengths is not None:
                per_example = dict(zip(features["example_id"], requests))
                lengths.extend((len(r.tokens), r.finish_reason == "length") for r in
                               (per_example[i] for i in range(len(examples))))
            return self.finish_generation(features, examples, requests)
        return self._predict_static(examples, generation, streamer, lengths, features)

    def _predict_static(self, examples, generation, streamer, lengths, features=None) -> list:
        """``predict_examples`` through ``model.generate`` (steered by ``generation`` and ``streamer``)."""
        from .batching import build_features, eval_batches, feature_lengths
        from .evaluation import predict_features

        if generation is not None and generation.seed is not None:
            from accelerate.utils import set_seed

            set_seed(generation.seed)
        if features is None:
            features = build_features(self.task, self.config, self.tokenizer, examples, "predict", use_cache=False)
        calls: list | None = [] if lengths is not None else None
        model = _steered(self.model, generation, streamer, calls)
        outputs = predict_features(self.accelerator, self.task, model, features, self.batch_size, generated={})
        if lengths is not None:
            # predict_features runs the batches of eval_batches in order: row r of call k is that batch's feature r
            order = [i for batch in eval_batches(feature_lengths(features), self.batch_size) for i in batch]
            rows = [row for call in calls for row in call]
            ids = features["example_id"]
            per_example = {ids[index]: row for index, row in zip(order, rows)} if len(rows) == len(order) else {}
            lengths.extend(per_example.get(i, (0, False)) for i in range(len(examples)))
        return self.task.postprocess(outputs, features, examples)

    # --- continuous batching (contract 2.3) -------------------------------------------------

    def plan_generation(self, examples: list[dict]):
        """(features, the task's ``GenerationPlan``) for ``examples``; the plan is None when the task
        or the model is not generated with continuous batching (then ``model.generate`` runs)."""
        from .batching import build_features
        from .evaluation import generation_plan

        features = build_features(self.task, self.config, self.tokenizer, examples, "predict", use_cache=False)
        return features, generation_plan(self.task, self.model, features)

    def generation_requests(self, plan, generation: GenerationSettings | None = None, stop_texts=(),
                            **callbacks) -> list:
        """One ``generation.Request`` per feature of ``plan``, with ``generation``'s settings (sampling
        draws top-k as ``model.generate`` does, from the model's generation config)."""
        from .generation import Request

        generation = generation or GenerationSettings()
        top_k = getattr(getattr(self.model, "generation_config", None), "top_k", None)
        stops = frozenset(plan.stop_ids)
        return [Request(prompt, generation.max_new_tokens or plan.max_new_tokens, stops,
                        temperature=generation.temperature or None, top_p=generation.top_p, top_k=top_k,
                        seed=generation.seed, stop_texts=tuple(stop_texts), **callbacks)
                for prompt in plan.prompts]

    def continuous_batcher(self, max_batch_size: int | None = None, max_batch_tokens: int | None = None,
                           tokenizer=None, min_join: int | None = None):
        """A ``ContinuousBatcher`` over this model (``max_batch_size``: default the prediction batch size)."""
        from .generation import ContinuousBatcher

        size = max_batch_size or self.batch_size
        return ContinuousBatcher(self.model, self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None
                                 else 0, max_batch_size=size, max_batch_tokens=max_batch_tokens, tokenizer=tokenizer,
                                 min_join=min_join or max(1, size // 4))

    def finish_generation(self, features, examples: list[dict], requests: list) -> list:
        """Task predictions for ``examples`` from the generated ids of ``requests`` (one per feature)."""
        from .evaluation import predict_features

        generated = {i: r.tokens for i, r in enumerate(requests)}
        outputs = predict_features(self.accelerator, self.task, self.model, features, self.batch_size,
                                   generated=generated)
        return self.task.postprocess(outputs, features, examples)

    def records(self, predictions: list, examples: list[dict]) -> list[dict]:
        return [self.task.format_prediction(p, e) for p, e in zip(predictions, examples)]

    def predict(self, inputs: list) -> list[dict]:
        """For each input (text or record), the record ``sft predict`` prints for it."""
        examples = self.examples(list(inputs))
        return self.records(self.predict_examples(examples), examples)

    def generate(self, prompts: list[str] | None = None, conversations: list[list[dict]] | None = None,
                 generation: GenerationSettings | None = None, streamer=None) -> list[dict]:
        """For each prompt or chat conversation (generative tasks only): {"text", "tokens",
        "finish_reason"} ("length" when the length limit ended it, else "stop")."""
        if not self.generative:
            raise SFTError(f"task {self.task_name!r} does not generate text")
        examples = self.generation_examples(prompts, conversations)
        lengths: list = []
        predictions = self.predict_examples(examples, generation, streamer, lengths)
        return [{"text": self.task.prediction_text(p), "tokens": n, "finish_reason": "length" if cut else "stop"}
                for p, (n, cut) in zip(predictions, lengths)]

    def generation_examples(self, prompts: list[str] | None = None,
                            conversations: list[list[dict]] | None = None) -> list[dict]:
        if conversations is not None:
            read = self.roles.read_messages
            if read is None:
                raise SFTError(f"task {self.task_name!r} takes no chat conversations")
            return read(conversations)
        return self.task.read_inputs(list(prompts or []))

    def info(self) -> dict:
        """What the model is and takes: task, labels, backend, versions (``sft serve``'s /info)."""
        import torch
        import transformers

        from ..version import __version__

        state = self.task.state_dict()
        info = {"task": self.task_name, "model": self.model_dir, "backend": self.backend,
                "base_model": getattr(self.config, "model", None), "input_fields": list(self.input_fields),
                "generative": self.generative, "max_length": self.config.trainer.max_length,
                "versions": {"sft": __version__, "torch": torch.__version__, "transformers": transformers.__version__}}
        if isinstance(state.get("labels"), list):
            info["labels"] = state["labels"]
        if self.backend == "onnx":
            import onnxruntime

            info["versions"]["onnxruntime"] = onnxruntime.__version__
            info["quantize"] = getattr(self.model, "quantize", None)
        return info
