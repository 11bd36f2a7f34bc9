"""The preference task: DPO and its relatives on the one training loop.

A pair is a prompt with a chosen and a rejected answer. Both conversations are rendered by the chat
template with the checks the instruct task trains under (``sft_core.kit.chat_template``: the
prompt's rendering a token prefix of both, no double BOS, the end-of-turn token part of the
answer), and go through the model in one forward: a batch of B pairs is 2B rows, the chosen ones
first. The log-probability of an answer is the sum over its tokens (``kit.causal_lm_logps``: the
chunked output layer, never the batch's full-vocabulary logits); ``losses.py`` turns them into
the loss.

The reference model (``preference.reference``): under LoRA the same model with its adapters
switched off; a frozen copy; or its log-probabilities computed once, before training, and stored
with the features (``precompute``: one model in memory, and a resumed run sees the same numbers).
A run that trains decides it; a model saved by this task keeps it (its state) for ``sft eval``;
any other causal LM evaluated on pairs has none, and is scored by its own log-probabilities.

Prediction, chat and serving are the instruct task's (a preference-tuned model is a causal LM
with a chat template): this task holds one and hands it the prompts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from sft_core.errors import ConfigError, DataError, SFTError
from sft_core.kit import causal_lm_logps, chat_template, resolve_data, resolve_model, rows_for

from .formats import read_pairs
from .losses import nll, pair_losses
from .options import REFERENCE_FREE

SAMPLE = Path(__file__).parent / "sample_data"
IGNORE = -100
#: Columns of a pair's features: the chosen conversation as input_ids/labels (what a tool reading a
#: conversation sees), the rejected one beside it.
PAIR_COLUMNS = ("input_ids", "labels", "rejected_ids", "rejected_labels")


def _instruct_task(config):
    """The instruct task this task generates with, configured from this run's settings."""
    from sft_core.config import build_config
    from sft_core.kit import host

    plugins = host()
    if "instruct" not in plugins.tasks:
        raise ConfigError("the preference task generates through the instruct task, which is not loaded "
                          "(check SFT_LOAD_PLUGINS)")
    options = config.options
    layer = {"model": config.model,
             "instruct": {k: v for k, v in (("chat_template", options.chat_template),
                                            ("max_new_tokens", options.max_new_tokens)) if v is not None},
             "trainer": {"max_length": config.trainer.max_length, "chunked_loss": config.trainer.chunked_loss},
             "data": {"system": config.data.system} if config.data.system is not None else {}}
    spec = plugins.get_task("instruct")
    return spec.factory(build_config(spec, [("the preference task's settings", layer)]))


def _unwrapped(model):
    while getattr(model, "module", None) is not None:  # DDP and the like
        model = model.module
    return model


def _has_adapters(model) -> bool:
    return hasattr(_unwrapped(model), "disable_adapter")


class PreferenceTask:
    predictions_file = "predictions.jsonl"
    main_metric = "reward_accuracy"
    metric_directions = {"loss": "lower", "rejected_reward": "lower", "rejected_logp": "lower"}

    def __init__(self, config):
        self.config = config
        self.options = config.options
        self.beta = config.options.beta_value
        self.instruct = _instruct_task(config)
        self.tokenizer = None
        self._whitespace: frozenset[int] = frozenset()
        #: {"kind": adapters | copy | precompute | none, "model": the reference's path}: decided by a
        #: run that trains, kept in the saved model's state; None: no reference (scored by log-probabilities)
        self.reference: dict | None = None
        self._reference_model = None
        self._train_figures: list[torch.Tensor] = []  # per training batch: accuracy, margin, chosen, rejected reward
        self.report: dict = {}

    # --- data ---------------------------------------------------------------------------------
    def load(self, split: str, path) -> list[dict]:
        if split == "predict":  # prompts to answer: the instruct task reads them
            return self.instruct.load("predict", path)
        if path is None:
            path = SAMPLE / f"{split}.jsonl"
        path = resolve_data(path) if isinstance(path, str) else path
        data = self.config.data
        selection = rows_for(path, data, split)
        rows = (*selection, data.rows_seed) if selection else None
        examples, skipped = read_pairs(path, data.format, data.invalid_pairs, rows)
        if data.system is not None:
            system = [{"role": "system", "content": data.system}]
            examples = [dict(e, prompt=system + [m for m in e["prompt"] if m["role"] != "system"]) for e in examples]
        # the preferred conversation whole, for what reads conversations (the GGUF export's checks)
        examples = [dict(e, messages=e["prompt"] + e["chosen"]) for e in examples]
        if skipped:
            places = ", ".join(f"line {s['line']} ({s['why']})" for s in skipped[:5])
            more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
            print(f"preference: {len(skipped)} of {len(skipped) + len(examples)} pairs of {path} skipped: {places}{more} "
                  "(data.invalid_pairs: error stops instead)", file=sys.stderr)
        self.report.setdefault("skipped_pairs", {})[split] = self.report.get("skipped_pairs", {}).get(split, 0) + len(skipped)
        return examples

    def setup(self, train_examples: list[dict]) -> None:
        self.instruct.setup([])

    def state_dict(self) -> dict:
        return {"reference": self.reference, "template": self.instruct.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.reference = state.get("reference")
        self.instruct.load_state_dict(state.get("template", {}))

    # --- model --------------------------------------------------------------------------------
    def load_tokenizer(self, name_or_path: str):
        self.tokenizer = self.instruct.load_tokenizer(name_or_path)
        self._whitespace = chat_template.whitespace_ids(self.tokenizer)
        return self.tokenizer

    def build_model(self, name_or_path: str):
        return self.instruct.build_model(name_or_path)

    # --- features and batches -----------------------------------------------------------------
    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        if "chosen" not in examples:  # prompts to answer
            return self.instruct.preprocess(examples)
        out: dict[str, list] = {k: [] for k in (*PAIR_COLUMNS, "prompt_len", "length", "truncated", "example_id")}
        for j, prompt in enumerate(examples["prompt"]):
            where = f"{examples['file'][j]} line {examples['line'][j]}"
            start = len(chat_template.prompt_ids(self.tokenizer, prompt))
            cut = False
            sides = []
            for name in ("chosen", "rejected"):
                ids, labels, prompt_len, truncated = self._encode(prompt, examples[name][j], start, where, name)
                sides.append((ids, labels))
                cut = cut or truncated
            (chosen, chosen_labels), (rejected, rejected_labels) = sides
            for key, value in zip(PAIR_COLUMNS, (chosen, chosen_labels, rejected, rejected_labels)):
                out[key].append(value)
            out["prompt_len"].append(prompt_len)
            out["length"].append(len(chosen) + len(rejected))
            out["truncated"].append(cut)
            out["example_id"].append(examples["example_id"][j])
        return out

    def _encode(self, prompt: list[dict], answer: list[dict], start: int, where: str, name: str):
        """(ids, labels, prompt length, truncated) of the prompt followed by one answer; labels on
        the answer's assistant turns (with their end-of-turn token) only."""
        encoded = chat_template.encode(self.tokenizer, prompt + answer, f"{where} ({name})", self._whitespace)
        ids = encoded.input_ids
        labels = [IGNORE] * len(ids)
        for s, e in encoded.spans:
            if s >= start:
                labels[s:e] = ids[s:e]
        if all(t == IGNORE for t in labels):
            raise DataError(f"{where}: the chat template renders no tokens for the {name} answer, so there is nothing "
                            "to compare")
        limit = self.config.trainer.max_length
        if len(ids) <= limit:
            return ids, labels, start, False
        if self.options.truncation == "keep_end":
            drop = len(ids) - limit
            ids, labels = ids[drop:], labels[drop:]
            labels[0] = IGNORE
            return ids, labels, max(start - drop, 0), True
        return ids[:limit], labels[:limit], min(start, limit), True

    def finish_features(self, features, split: str):
        if "rejected_ids" not in features.column_names:
            return self.instruct.finish_features(features, split)
        total = len(features)
        truncated = sum(features["truncated"]) if total else 0
        empty = [i for i, (c, r) in enumerate(zip(features["labels"], features["rejected_labels"]))
                 if all(t == IGNORE for t in c) or all(t == IGNORE for t in r)]
        report = {"pairs": total, "truncated": truncated, "truncation": self.options.truncation,
                  "max_length": self.config.trainer.max_length, "no_answer_token": len(empty)}
        if split == "train":
            if len(empty) == total:
                raise DataError(f"no training pair keeps an answer token of both answers within trainer.max_length="
                                f"{self.config.trainer.max_length} ({self.options.truncation}); raise max_length")
            if empty:
                gone = set(empty)
                features = features.select([i for i in range(total) if i not in gone])
            self._decide_reference()
        if truncated or empty:
            print(f"preference: {truncated} of {total} {split} pairs are longer than trainer.max_length="
                  f"{self.config.trainer.max_length} and were cut ({self.options.truncation})"
                  + (f"; {len(empty)} kept no token of an answer" + (" and are left out" if split == "train" else "")
                     if empty else ""), file=sys.stderr)
        if split in ("train", "eval") and self._kind() == "precompute":
            started = time.perf_counter()
            features = self._precompute(features, split)
            report.update(reference="precomputed", reference_seconds=round(time.perf_counter() - started, 2))
        self.report[split] = report
        return features

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        """A batch of B pairs: tensors of (B, 2, length), the chosen answer's sequence first, padded to
        the longest of either; ``_logps`` runs them as one forward of 2B rows."""
        if "rejected_ids" not in features[0]:
            return self.instruct.collate(features)
        pad = self.tokenizer.pad_token_id
        longest = max(max(len(f["input_ids"]), len(f["rejected_ids"])) for f in features)
        fill = lambda seq, value: seq + [value] * (longest - len(seq))  # noqa: E731
        batch = {"input_ids": torch.tensor([[fill(f["input_ids"], pad), fill(f["rejected_ids"], pad)] for f in features]),
                 "attention_mask": torch.tensor([[fill([1] * len(f["input_ids"]), 0), fill([1] * len(f["rejected_ids"]), 0)]
                                                 for f in features]),
                 "labels": torch.tensor([[fill(f["labels"], IGNORE), fill(f["rejected_labels"], IGNORE)] for f in features])}
        if "ref_chosen_logp" in features[0]:
            batch["ref_logps"] = torch.tensor([[f["ref_chosen_logp"], f["ref_rejected_logp"]] for f in features],
                                              dtype=torch.float64)
        return batch

    # --- log-probabilities, the reference, the loss -------------------------------------------
    def _logps(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed log-probability of each answer's tokens, their number): (2B,) each, the B chosen
        answers first; one forward over the chosen and rejected sequences together."""
        rows = lambda x: x.transpose(0, 1).reshape(-1, x.shape[-1])  # noqa: E731 -- (B, 2, L) to (2B, L)
        labels = rows(batch["labels"])
        inputs = {"input_ids": rows(batch["input_ids"]), "attention_mask": rows(batch["attention_mask"]),
                  "use_cache": False}
        token_logps = causal_lm_logps(model, inputs, labels, chunked=self.config.trainer.chunked_loss)
        return token_logps.sum(1), (labels[:, 1:] != IGNORE).sum(1)

    def _decide_reference(self) -> None:
        """The reference of a run that trains (a resumed run keeps the one its state holds)."""
        if self.reference is not None:
            return
        kind = self.options.reference
        if self.options.loss in REFERENCE_FREE:
            kind = "none"
        elif kind == "auto":
            kind = "adapters" if self.config.peft.enabled else "precompute"
        if kind == "adapters" and not self.config.peft.enabled:
            raise ConfigError("preference.reference=adapters switches LoRA adapters off, but peft.method is none; "
                              "use copy or precompute for full fine-tuning")
        self.reference = {"kind": kind, "model": resolve_model(self.config.model)}

    def _kind(self, model=None) -> str:
        kind = (self.reference or {}).get("kind", "none")
        if kind == "adapters" and model is not None and not _has_adapters(model):
            return "copy"  # a saved model whose adapters were merged: its reference is loaded
        return kind

    def _load_reference(self):
        path = self.reference["model"]
        try:
            model = self.instruct.build_model(path)
        except (OSError, ValueError) as exc:
            raise SFTError(f"cannot load the reference model {path!r} ({str(exc).splitlines()[0]}); it is the model "
                           "the preference run started from") from None
        model.config.pad_token_id = self.tokenizer.pad_token_id
        model.eval().requires_grad_(False)
        return model

    def _reference_logps(self, model, batch) -> torch.Tensor | None:
        if "ref_logps" in batch:
            return batch["ref_logps"].transpose(0, 1).reshape(-1).float()
        kind = self._kind(model)
        if kind == "none":
            return None
        with torch.no_grad():
            if kind == "adapters":
                with _unwrapped(model).disable_adapter():
                    return self._logps(model, batch)[0].detach()
            if self._reference_model is None:
                self._reference_model = self._load_reference()
            device = batch["input_ids"].device
            if next(self._reference_model.parameters()).device != device:
                self._reference_model.to(device)
            return self._logps(self._reference_model, batch)[0]

    def _precompute(self, features, split: str):
        """Features with the reference's log-probabilities of both answers (columns ref_chosen_logp,
        ref_rejected_logp), computed once in fp32 before training."""
        from accelerate import PartialState

        started = time.perf_counter()
        model = self._load_reference().to(PartialState().device)
        order = sorted(range(len(features)), key=lambda i: features[i]["length"])
        chosen, rejected = [0.0] * len(features), [0.0] * len(features)
        size = self.config.trainer.eval_batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                indices = order[start:start + size]
                batch = self.collate([features[i] for i in indices])
                batch = {k: v.to(PartialState().device) for k, v in batch.items()}
                sums = self._logps(model, batch)[0].double().tolist()
                for k, i in enumerate(indices):
                    chosen[i], rejected[i] = sums[k], sums[len(indices) + k]
        del model
        print(f"preference: the reference's log-probabilities of {len(features)} {split} pairs computed in "
              f"{time.perf_counter() - started:.1f} s (preference.reference: precompute)", file=sys.stderr)
        return features.add_column("ref_chosen_logp", chosen).add_column("ref_rejected_logp", rejected)

    def _pair_losses(self, chosen, rejected, chosen_tokens, rejected_tokens, ref):
        n = len(chosen)
        ref_chosen, ref_rejected = (ref[:n], ref[n:]) if ref is not None else (None, None)
        return pair_losses(self.options.loss, self.beta, chosen, rejected, chosen_tokens, rejected_tokens, ref_chosen,
                           ref_rejected, self.options.label_smoothing, self.options.simpo_gamma)

    def compute_loss(self, model, batch) -> torch.Tensor:
        logps, tokens = self._logps(model, batch)
        ref = self._reference_logps(model, batch)
        n = len(logps) // 2
        found = self._pair_losses(logps[:n], logps[n:], tokens[:n], tokens[n:], ref)
        if found.losses is None:
            raise SFTError(f"preference.loss={self.options.loss} needs a reference model and this run has none")
        loss = found.losses.mean()
        if self.options.loss == "orpo":
            loss = loss + nll(logps[:n], tokens[:n])
        margin = found.chosen_rewards - found.rejected_rewards
        self._train_figures.append(torch.stack([(margin > 0).float().mean(), margin.float().mean(),
                                                found.chosen_rewards.float().mean(),
                                                found.rejected_rewards.float().mean()]).detach())
        return loss

    def train_metrics(self) -> dict[str, float]:
        """Reward accuracy, margin and the chosen and rejected rewards of the training batches since
        the last call (TRL logs the same as rewards/accuracies, rewards/margins, ...)."""
        if not self._train_figures:
            return {}
        means = torch.stack(self._train_figures).mean(0).tolist()
        self._train_figures = []
        return dict(zip(("reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward"), means))

    # --- evaluation ---------------------------------------------------------------------------
    def predict_step(self, model, batch) -> dict:
        if "prompt_ids" in batch:  # prompts: generation
            return self.instruct.predict_step(model, batch)
        logps, tokens = self._logps(model, batch)
        ref = self._reference_logps(model, batch)
        n = len(logps) // 2
        out = {"chosen_logp": logps[:n].double(), "rejected_logp": logps[n:].double(),
               "chosen_tokens": tokens[:n], "rejected_tokens": tokens[n:]}
        if ref is not None:
            out.update(ref_chosen_logp=ref[:n].double(), ref_rejected_logp=ref[n:].double())
        return out

    def postprocess(self, outputs: list, features, examples: list[dict]) -> list:
        if not outputs or "chosen_logp" not in outputs[0]:
            return self.instruct.postprocess(outputs, features, examples)
        predictions: list = [None] * len(examples)
        for example_id, output in zip(features["example_id"], outputs):
            predictions[example_id] = {k: (float(v) if "logp" in k else int(v)) for k, v in output.items()}
        return predictions

    def compute_metrics(self, predictions: list, examples: list[dict]) -> dict:
        found = [p for p in predictions if p is not None]
        if not found:
            return {}
        column = lambda key: torch.tensor([p[key] for p in found], dtype=torch.float64)  # noqa: E731
        chosen, rejected = column("chosen_logp"), column("rejected_logp")
        chosen_tokens, rejected_tokens = column("chosen_tokens"), column("rejected_tokens")
        ref = (torch.cat([column("ref_chosen_logp"), column("ref_rejected_logp")])
               if "ref_chosen_logp" in found[0] else None)
        pairs = self._pair_losses(chosen, rejected, chosen_tokens, rejected_tokens, ref)
        margin = pairs.chosen_rewards - pairs.rejected_rewards
        metrics = {"reward_accuracy": float((margin > 0).double().mean()), "reward_margin": float(margin.mean()),
                   "chosen_reward": float(pairs.chosen_rewards.mean()),
                   "rejected_reward": float(pairs.rejected_rewards.mean()),
                   "logp_accuracy": float((chosen > rejected).double().mean()),
                   "chosen_logp": float(chosen.mean()), "rejected_logp": float(rejected.mean()), "pairs": len(found)}
        if pairs.losses is not None:
            loss = pairs.losses.mean()
            if self.options.loss == "orpo":
                loss = loss + nll(chosen, chosen_tokens)
            metrics["loss"] = float(loss)
        return metrics

    def gold_predictions(self, examples: list[dict]) -> list[dict]:
        """Predictions that prefer every chosen answer by a wide margin (and a reference indifferent
        to both): they score a reward accuracy of 1."""
        gold = {"chosen_logp": 0.0, "rejected_logp": -100.0, "chosen_tokens": 1, "rejected_tokens": 1}
        if self._kind() != "none":
            gold.update(ref_chosen_logp=-50.0, ref_rejected_logp=-50.0)
        return [dict(gold) for _ in examples]

    def _pair_record(self, prediction: dict | None, example: dict) -> dict:
        users = [m["content"] for m in example["prompt"] if m["role"] == "user"]
        record = {"file": example["file"], "line": example["line"], "prompt": users[-1] if users else "",
                  **(prediction or {})}
        if prediction is not None:
            value = lambda key: torch.tensor([prediction[key]], dtype=torch.float64)  # noqa: E731
            ref = (torch.tensor([prediction["ref_chosen_logp"], prediction["ref_rejected_logp"]], dtype=torch.float64)
                   if "ref_chosen_logp" in prediction else None)
            pairs = self._pair_losses(value("chosen_logp"), value("rejected_logp"), value("chosen_tokens"),
                                      value("rejected_tokens"), ref)
            record["chosen_reward"] = float(pairs.chosen_rewards[0])
            record["rejected_reward"] = float(pairs.rejected_rewards[0])
            record["prefers_chosen"] = record["chosen_reward"] > record["rejected_reward"]
        return record

    def write_predictions(self, path: Path, predictions: list, examples: list[dict]) -> None:
        import json

        if examples and "chosen" not in examples[0]:
            return self.instruct.write_predictions(path, predictions, examples)
        with open(path, "w", encoding="utf-8") as f:
            for p, e in zip(predictions, examples):
                f.write(json.dumps(self._pair_record(p, e), ensure_ascii=False) + "\n")

    # --- prediction, chat and serving: the instruct task's ------------------------------------
    @property
    def stops(self) -> list[int]:
        return self.instruct.stops

    def generation_plan(self, features):
        """Prompts to answer are the instruct task's; scored pairs generate nothing."""
        if "rejected_ids" in features.column_names:
            return None
        return self.instruct.generation_plan(features)

    def generate(self, model, prompt_ids, prompt_mask, max_new_tokens: int | None = None, streamer=None):
        return self.instruct.generate(model, prompt_ids, prompt_mask, max_new_tokens, streamer)

    def format_prediction(self, prediction, example: dict) -> dict:
        if "chosen" in example:  # a scored pair
            return self._pair_record(prediction, example)
        return self.instruct.format_prediction(prediction, example)

    def read_inputs(self, texts: list[str], where: str = "input") -> list[dict]:
        return self.instruct.read_inputs(texts, where)

    def prediction_text(self, prediction) -> str:
        return self.instruct.prediction_text(prediction)

    def read_messages(self, conversations: list[list[dict]]) -> list[dict]:
        return self.instruct.read_messages(conversations)
