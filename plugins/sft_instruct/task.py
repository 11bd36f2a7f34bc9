"""The instruct task: supervised fine-tuning of causal language models on instructions.

Conversations are rendered by the chat template (``sft_core.kit.chat_template``, shared with
every task that trains on conversations); the loss is taken on the
assistant turns (``instruct.train_on``), each with its end-of-turn token, masked by position and
never by comparing ids with the pad id (SmolLM2 pads with its end-of-turn token). Evaluation
reports loss and perplexity and, by generation (left-padded batches, the KV cache, greedy or beam),
the metrics of the data: SQuAD-normalised exact match and F1 for instruction data, the source
task's own metric for another task's data.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from sft_core.errors import ConfigError, DataError, SFTError
from sft_core.kit import chat_template as template
from sft_core.task import roles

from .formats import read_conversations
from .mixture import SourceTask, check_sources, draw, source_record
from .options import mixture_sources
from .packing import check_isolation, pack

SAMPLE = Path(__file__).parent / "sample_data"
IGNORE = template.IGNORE
DEFAULT_NEW_TOKENS = 256


def _host():
    from sft_core.host import PluginHost

    return PluginHost()


class InstructTask:
    predictions_file = "predictions.jsonl"

    def __init__(self, config):
        self.config = config
        self.options = config.options
        self.sources = mixture_sources(config.data, self.options)
        self._source_tasks: dict[int, SourceTask] = {}
        self.tokenizer = None
        self.stops: list[int] = []
        self._whitespace: frozenset[int] = frozenset()
        self._eval_references: list[list[str]] = []
        self._new_tokens: int | None = None
        self._grow = False
        self.report: dict = {}

    # --- metric names -------------------------------------------------------------------------
    @property
    def main_metric(self) -> str:
        if not self.options.generate:
            return "loss"
        if len(self.sources) > 1:
            return "score"
        source = self._source(0)
        if source is not None:
            return source.main_metric
        return "f1" if "f1" in self.options.metrics else self.options.metrics[0]

    @property
    def metric_directions(self) -> dict[str, str]:
        """Contract 1.1: loss and perplexity are lower-is-better, also per source (``NAME/loss``); a
        source task's metrics keep the directions that task declares."""
        from sft_core.task import metric_direction

        lower = ("loss", "perplexity")
        directions = {name: "lower" for name in lower}
        for index, spec in enumerate(self.sources):
            prefix = f"{spec['name']}/"
            directions.update({prefix + name: "lower" for name in lower})
            source = self._source(index)
            if source is not None:
                declared = roles(source.task).metric_directions or {}
                directions.update({prefix + name: metric_direction(source.task, name) for name in declared})
                directions.update({name: metric_direction(source.task, name) for name in declared}
                                  if len(self.sources) == 1 else {})
        return directions

    def _source(self, index: int) -> SourceTask | None:
        spec = self.sources[index]
        if not spec["source_task"]:
            return None
        if index not in self._source_tasks:
            self._source_tasks[index] = SourceTask(_host(), spec, self.config)
        return self._source_tasks[index]

    # --- data ---------------------------------------------------------------------------------
    def _read(self, index: int, split: str, path) -> list[dict]:
        from sft_core.kit import resolve_data as resolve

        spec = self.sources[index]
        path = resolve(path) if isinstance(path, str) else path
        source = self._source(index)
        need = split != "predict"
        if source is None:
            examples = read_conversations(path, spec["format"], need_answer=need)
            if spec["system"] is not None:
                examples = [dict(e, messages=[{"role": "system", "content": spec["system"]},
                                              *[m for m in e["messages"] if m["role"] != "system"]]) for e in examples]
            out = []
            for e in examples:
                refs = e["references"] or ([e["messages"][-1]["content"]] if need else [])
                out.append(source_record(index, e["messages"], refs, (e["file"], e["line"])))
            return out
        originals = source.read(split, path)
        if split != "predict":
            source.setup(originals)  # e.g. the label map, before prompts are written (training data first)
        system = [{"role": "system", "content": spec["system"]}] if spec["system"] is not None else []
        out = []
        for n, original in enumerate(originals):
            messages = [*system, {"role": "user", "content": source.user_message(original)}]
            refs = []
            if need:
                answer = source.answer(original)
                messages.append({"role": "assistant", "content": answer})
                refs = [answer]
            out.append(source_record(index, messages, refs, (str(path), original.get("line", n + 1)), original))
        return out

    def load(self, split: str, path: str | None) -> list[dict]:
        if split == "predict":  # prompts of a file; None: those of the built-in evaluation sample
            if path is None and self._source(0) is None:
                path = SAMPLE / "eval.jsonl"
            if path is not None and Path(path).suffix == ".txt" and self._source(0) is None:
                return self._prompt_lines(Path(path))
            return self._read(0, "predict", path)
        if not self.options.mixture:
            if path is None:
                path = SAMPLE / ("train.jsonl" if split == "train" else "eval.jsonl")
            examples = self._read(0, split, path)
        else:
            check_sources(self.sources, split)
            per_source = []
            for i, spec in enumerate(self.sources):
                limit = spec[f"max_{split}_samples"]
                if split == "eval" and self.options.eval_per_source:
                    limit = min(limit or self.options.eval_per_source, self.options.eval_per_source)
                found = self._read(i, split, spec[split]) if spec[split] else []
                per_source.append(found[:limit] if limit else found)
            if split == "train":
                drawn = draw([len(s) for s in per_source], [s["weight"] for s in self.sources], self.options.sampling,
                             self.options.temperature, self.options.mixture_size, self.config.trainer.seed)
                examples = [per_source[s][i] for s, i in drawn]
                self.report["mixture"] = {spec["name"]: sum(1 for s, _ in drawn if s == k)
                                          for k, spec in enumerate(self.sources)}
            else:
                examples = [e for found in per_source for e in found]
        if split == "eval":
            self._eval_references = [e["references"] for e in examples]
        if split == "train":
            self._count_empty_answers(examples)
        return examples

    def _count_empty_answers(self, examples: list[dict]) -> None:
        """Say so when assistant answers are empty: such an example teaches the model to end its turn
        at once (kept: an empty answer may be meant, but never silently)."""
        empty = [e for e in examples if any(m["role"] == "assistant" and not m["content"].strip()
                                            for m in e["messages"])]
        self.report["empty_answers"] = len(empty)
        if empty:
            places = ", ".join(f"{Path(e['file']).name} line {e['line']}" for e in empty[:5])
            more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
            print(f"instruct: {len(empty)} of {len(examples)} training examples have an empty assistant answer "
                  f"({places}{more}); they teach the model to end its turn at once: fill them in or drop them",
                  file=sys.stderr)

    def setup(self, train_examples: list[dict]) -> None:
        for index in range(len(self.sources)):
            source = self._source(index)
            if source is not None:
                originals = [json.loads(e["original"]) for e in train_examples if e["source"] == index]
                if originals:
                    source.setup(originals)

    def state_dict(self) -> dict:
        states = {}
        for index in range(len(self.sources)):
            source = self._source(index)
            if source is not None:
                states[self.sources[index]["name"]] = source.task.state_dict()
        return {"sources": states, "stop_ids": self.stops}

    def load_state_dict(self, state: dict) -> None:
        for index in range(len(self.sources)):
            source = self._source(index)
            saved = state.get("sources", {}).get(self.sources[index]["name"])
            if source is not None and saved is not None:
                source.task.load_state_dict(saved)
                source.ready = True

    # --- model --------------------------------------------------------------------------------
    def load_tokenizer(self, name_or_path: str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        self._grow = template.resolve_template(tokenizer, self.options.chat_template, name_or_path)
        self.tokenizer = tokenizer
        self._whitespace = template.whitespace_ids(tokenizer)
        probe = [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "Yes."}]
        encoded = template.encode(tokenizer, probe, "the chat template (checked on a probe conversation)",
                                  self._whitespace)
        if not encoded.spans:
            raise ConfigError("the chat template renders no tokens for assistant messages: there would be nothing "
                              "to train on (set instruct.chat_template)")
        self.stops = template.end_of_turn_ids(tokenizer, encoded)
        return tokenizer

    def build_model(self, name_or_path: str):
        from transformers import AutoModelForCausalLM

        from sft_core.kit import with_head

        kwargs = {"attn_implementation": self.options.attention} if self.options.attention else {}
        model = with_head(AutoModelForCausalLM, name_or_path, "causal language modelling", dtype=torch.float32, **kwargs)
        if self.tokenizer is not None and model.get_input_embeddings().num_embeddings < len(self.tokenizer):
            # the added tokens' rows are drawn from a fixed seed: every load of this model gets the same
            # ones (a reference model for preference tuning must equal the policy's starting point)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model.resize_token_embeddings(len(self.tokenizer))
        if self.stops:
            model.generation_config.eos_token_id = list(self.stops)
        if self.options.packing:
            check_isolation(model, model.get_input_embeddings().num_embeddings)
        return model

    # --- features and batches -----------------------------------------------------------------
    def _where(self, examples: dict, j: int) -> str:
        return f"{examples['file'][j]} line {examples['line'][j]}"

    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        tok, limit = self.tokenizer, self.config.trainer.max_length
        keep_end = self.options.truncation == "keep_end"
        out = {"input_ids": [], "labels": [], "prompt_len": [], "length": [], "truncated": [], "example_id": []}
        for j, messages in enumerate(examples["messages"]):
            where = self._where(examples, j)
            if messages[-1]["role"] != "assistant":  # prediction input: the generation prompt alone
                ids = template.prompt_ids(tok, messages)
                cut = len(ids) > limit
                ids = ids[-limit:]  # a prompt keeps its end: the generation prompt must close it
                labels, start = None, len(ids)
            else:
                encoded = template.encode(tok, messages, where, self._whitespace)
                if not encoded.spans:
                    raise DataError(f"{where}: the assistant mask is empty: the chat template renders no tokens for "
                                    "this example's assistant turns, so there is nothing to learn from")
                ids, labels = encoded.input_ids, template.labels_for(encoded, self.options.train_on)
                start = encoded.spans[-1][0]
                cut = len(ids) > limit
                if cut and keep_end:
                    drop = len(ids) - limit
                    ids, labels, start = ids[drop:], labels[drop:], max(start - drop, 0)
                    labels[0] = IGNORE
                elif cut:
                    ids, labels, start = ids[:limit], labels[:limit], min(start, limit)
            out["input_ids"].append(ids)
            out["labels"].append(labels)
            out["prompt_len"].append(start)
            out["length"].append(len(ids))
            out["truncated"].append(cut)
            out["example_id"].append(examples["example_id"][j])
        return out

    def finish_features(self, features, split: str):
        """Count truncation; training: drop examples left without a label token, then pack."""
        total = len(features)
        truncated = sum(features["truncated"]) if total else 0
        report = {"examples": total, "truncated": truncated, "truncation": self.options.truncation,
                  "max_length": self.config.trainer.max_length}
        if split == "train":
            trainable = [i for i, labels in enumerate(features["labels"]) if any(t != IGNORE for t in labels[1:])]
            report["dropped_no_answer_token"] = total - len(trainable)
            if not trainable:
                raise DataError(f"no training example keeps an answer token within trainer.max_length="
                                f"{self.config.trainer.max_length} ({self.options.truncation}); raise max_length")
            if len(trainable) < total:
                features = features.select(trainable)
            features = features.remove_columns(["prompt_len", "truncated"])
            if self.options.packing:
                before = len(features)
                features = pack(features, self.config.trainer.max_length)
                report["packed_sequences"] = len(features)
                report["examples_per_sequence"] = round(before / max(len(features), 1), 2)
        self.report[split] = report
        if truncated or report.get("dropped_no_answer_token"):
            share = 100 * truncated / total
            print(f"instruct: {truncated} of {total} {split} examples ({share:.1f}%) are longer than trainer.max_length="
                  f"{self.config.trainer.max_length} and were cut ({self.options.truncation})"
                  + (f"; {report['dropped_no_answer_token']} kept no answer token and are left out"
                     if report.get("dropped_no_answer_token") else ""), file=sys.stderr)
        return features

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        pad = self.tokenizer.pad_token_id
        longest = max(len(f["input_ids"]) for f in features)
        batch: dict[str, torch.Tensor] = {}
        batch["input_ids"] = torch.tensor([f["input_ids"] + [pad] * (longest - len(f["input_ids"])) for f in features])
        if "position_ids" in features[0]:
            # packed: positions restart per example; the padding is one more "example" of its own
            batch["position_ids"] = torch.tensor(
                [f["position_ids"] + list(range(longest - len(f["position_ids"]))) for f in features])
        else:
            batch["attention_mask"] = torch.tensor(
                [[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"])) for f in features])
        if features[0].get("labels") is not None:
            batch["labels"] = torch.tensor([f["labels"] + [IGNORE] * (longest - len(f["labels"])) for f in features])
        if "prompt_len" in features[0]:  # evaluation and prediction: left-padded generation prompts
            prompts = [f["input_ids"][:f["prompt_len"]] for f in features]
            width = max(len(p) for p in prompts)
            batch["prompt_ids"] = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
            batch["prompt_mask"] = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return batch

    @staticmethod
    def _model_inputs(batch: dict) -> dict:
        # no KV cache: transformers confines attention to each packed example only without one
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
        return {**inputs, "use_cache": False}

    def _token_losses(self, model, batch, reduction: str):
        """The loss over the label tokens: by default without the full-vocabulary logits of the batch
        (``trainer.chunked_loss``: the output layer and the cross-entropy over chunks of label tokens)."""
        from sft_core.kit import causal_lm_loss

        return causal_lm_loss(model, self._model_inputs(batch), batch["labels"],
                              chunked=self.config.trainer.chunked_loss, reduction=reduction)

    def compute_loss(self, model, batch) -> torch.Tensor:
        """Mean cross-entropy over the label tokens of the batch (the same as ``model(**batch).loss``)."""
        return self._token_losses(model, batch, "mean")

    # --- evaluation ---------------------------------------------------------------------------
    def _max_new_tokens(self) -> int:
        if self.options.max_new_tokens:
            return self.options.max_new_tokens
        if self._new_tokens is None:
            lengths = [len(template.encode_text(self.tokenizer, r)) for refs in self._eval_references for r in refs]
            self._new_tokens = (max(lengths) + 16) if lengths else DEFAULT_NEW_TOKENS
        return self._new_tokens

    def generate(self, model, prompt_ids, prompt_mask, max_new_tokens: int | None = None, streamer=None) -> list[list[int]]:
        kwargs = {"max_new_tokens": max_new_tokens or self._max_new_tokens(), "num_beams": self.options.num_beams,
                  "do_sample": False, "eos_token_id": list(self.stops) or None,
                  "pad_token_id": self.tokenizer.pad_token_id, "use_cache": True}
        if streamer is not None:
            kwargs["streamer"] = streamer
        if self.options.num_beams > 1:
            kwargs["early_stopping"] = True
        out = model.generate(input_ids=prompt_ids, attention_mask=prompt_mask, **kwargs)
        rows = []
        for row in out[:, prompt_ids.shape[1]:].tolist():
            end = next((i for i, t in enumerate(row) if t in self.stops), len(row))
            rows.append(row[:end])
        return rows

    def generation_plan(self, features):
        """Greedy decoding runs under the engine's continuous batching (contract 2.3); beam search
        stays with ``generate``."""
        from sft_core.task import GenerationPlan

        if not self.options.generate or self.options.num_beams > 1:
            return None
        prompts = [ids[:n] for ids, n in zip(features["input_ids"], features["prompt_len"])]
        return GenerationPlan(prompts, self._max_new_tokens(), tuple(self.stops), self.tokenizer.pad_token_id,
                              list(features["truncated"]))

    def predict_step(self, model, batch) -> dict:
        out: dict = {}
        if "labels" in batch:
            out["loss_sum"] = self._token_losses(model, batch, "none").sum(1)
            out["tokens"] = (batch["labels"][:, 1:] != IGNORE).sum(1)
        if "generated" in batch:  # the engine generated them (generation_plan)
            out["generated"] = batch["generated"]
        elif self.options.generate:
            out["generated"] = self.generate(model, batch["prompt_ids"], batch["prompt_mask"])
        if not out:
            raise SFTError("instruct.generate is false and the inputs carry no answers: nothing to compute")
        return out

    def postprocess(self, outputs: list[dict], features, examples: list[dict]) -> list[dict]:
        predictions: list = [None] * len(examples)
        generated = [o.get("generated") for o in outputs]
        texts = (self.tokenizer.batch_decode([g or [] for g in generated], skip_special_tokens=True)
                 if self.options.generate else [None] * len(outputs))
        for example_id, output, text in zip(features["example_id"], outputs, texts):
            predictions[example_id] = {"text": text.strip() if text is not None else None,
                                       "loss_sum": output.get("loss_sum", 0.0), "tokens": output.get("tokens", 0)}
        return predictions

    def gold_predictions(self, examples: list[dict]) -> list[dict]:
        """The first reference of each example as its generation (scores perfectly)."""
        return [{"text": (e["references"] or [""])[0], "loss_sum": 0.0, "tokens": 0} for e in examples]

    def compute_metrics(self, predictions: list[dict], examples: list[dict]) -> dict:
        metrics: dict = {}
        tokens = sum(p["tokens"] for p in predictions)
        if tokens:
            loss = sum(p["loss_sum"] for p in predictions) / tokens
            metrics.update(loss=loss, perplexity=math.exp(min(loss, 50.0)), answer_tokens=float(tokens))
        if not self.options.generate:
            return metrics
        several = len(self.sources) > 1
        scores = []
        for index, spec in enumerate(self.sources):
            chosen = [i for i, e in enumerate(examples) if e["source"] == index]
            if not chosen:
                continue
            found = self._score(index, [predictions[i]["text"] or "" for i in chosen], [examples[i] for i in chosen])
            prefix = f"{spec['name']}/" if several else ""
            metrics.update({prefix + k: v for k, v in found.items() if k != "_scaled"})
            scores.append(found["_scaled"])
        if several:
            metrics["score"] = sum(scores) / len(scores) if scores else 0.0
        return metrics

    def _score(self, index: int, texts: list[str], examples: list[dict]) -> dict:
        source = self._source(index)
        if source is not None:
            originals = [json.loads(e["original"]) for e in examples]
            source.setup(originals)
            found = dict(source.score([source.prediction(t, o) for t, o in zip(texts, originals)], originals))
            perfect = source.perfect(originals) or 1.0
            found["_scaled"] = float(found[source.main_metric]) / perfect
            return found
        from sft_qa.metrics import squad_scores

        refs = [e["references"] or [""] for e in examples]
        found: dict = {}
        wanted = self.options.metrics
        if "exact_match" in wanted or "f1" in wanted:
            squad = squad_scores(texts, refs)
            found.update({k: v for k, v in squad.items() if k in wanted})
        if "bleu" in wanted or "chrf" in wanted:
            from sacrebleu.metrics import BLEU, CHRF

            width = max(len(r) for r in refs)
            streams = [[r[k] if k < len(r) else r[0] for r in refs] for k in range(width)]
            if "bleu" in wanted:
                metric = BLEU()
                found["bleu"] = metric.corpus_score(texts, streams).score
                found["bleu_signature"] = str(metric.get_signature())
            if "chrf" in wanted:
                found["chrf"] = CHRF().corpus_score(texts, streams).score
        main = "f1" if "f1" in found else next(k for k in wanted if k in found)
        found["_scaled"] = float(found[main]) / 100.0
        return found

    def write_predictions(self, path: Path, predictions: list[dict], examples: list[dict]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for p, e in zip(predictions, examples):
                record = {"source": self.sources[e["source"]]["name"], "prompt": _prompt_text(e["messages"]),
                          "generation": p["text"], "references": e["references"]}
                f.write(json.dumps(record, ensure_ascii=False) + "\n")

    def read_inputs(self, texts: list[str], where: str = "input") -> list[dict]:
        system = self.sources[0]["system"]
        head = [{"role": "system", "content": system}] if system is not None else []
        return [source_record(0, [*head, {"role": "user", "content": t}], [], (where, n))
                for n, t in enumerate(texts, 1)]

    def _prompt_lines(self, path: Path) -> list[dict]:
        """``sft predict --input prompts.txt``: one prompt a line (blank lines skipped), as TEXT arguments are."""
        if not path.is_file():
            raise DataError(f"data file not found: {path}")
        lines = path.read_text(encoding="utf-8-sig").splitlines()
        examples = []
        for n, line in enumerate(lines, 1):
            if line.strip():
                [example] = self.read_inputs([line.strip()], str(path))
                examples.append(dict(example, line=n))
        if not examples:
            raise DataError(f"{path}: no prompts (a .txt input holds one prompt a line)")
        return examples

    def format_prediction(self, prediction: dict, example: dict) -> dict:
        return {"prompt": _prompt_text(example["messages"]), "generation": prediction["text"]}

    # contract 1.1: generated text and chat conversations, for the OpenAI-style routes of `sft serve`
    def prediction_text(self, prediction: dict) -> str:
        return prediction["text"] or ""

    def read_messages(self, conversations: list[list[dict]]) -> list[dict]:
        """Examples for chat conversations ending with a user message; the saved chat template renders them."""
        examples = []
        for n, messages in enumerate(conversations):
            if not messages or messages[-1].get("role") != "user":
                raise SFTError(f"conversation {n}: the last message must be the user's")
            examples.append(source_record(0, [{"role": m["role"], "content": m["content"]} for m in messages], [],
                                          ("request", n)))
        return examples


def _prompt_text(messages: list[dict]) -> str:
    """The last user message: what a reader of a predictions file wants to see as the prompt."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else ""
