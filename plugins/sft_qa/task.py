"""The question answering task: a question and a context to a span of the context (SQuAD style).

Features are windows of ``trainer.max_length`` tokens over the context, ``qa.doc_stride`` tokens
shared by neighbouring windows, the question whole in every window. Training features carry the
answer's token span (or the CLS position when the answer is not inside the window); evaluation
features carry the token -> character offsets instead, so post-processing can cut answers out of
the original context. Evaluation reduces each window to its top-k start and end logits on the
device (``predict_step``); ``postprocess`` combines the windows of a question.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from pathlib import Path

import torch

from sft_core.errors import ConfigError, DataError, SFTError

from .metrics import squad_scores
from .postprocess import Window, best_answer
from .reader import mismatched_answers, parse_articles, read_examples, select_articles

SAMPLE = Path(__file__).parent / "sample_data"
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
NBEST_FILE = "nbest_predictions.json"
NULL_ODDS_FILE = "null_odds.json"


def _note(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once, not once per process
        print(f"note: {message}", file=sys.stderr)


def _first_ids(ids: list[str], n: int = 5) -> str:
    unique = list(dict.fromkeys(ids))
    return ", ".join(unique[:n]) + (", ..." if len(unique) > n else "")


class QATask:
    predictions_file = "predictions.json"
    # written next to predictions_file and copied with it (see write_predictions)
    extra_prediction_files = (NBEST_FILE, NULL_ODDS_FILE)
    main_metric = "f1"
    #: contract 1.1: every metric here is higher-is-better
    metric_directions = {"f1": "higher", "exact_match": "higher"}
    #: named inputs of ``sft predict --question ... --context ...``
    input_fields = ("question", "context")
    #: a context longer than max_length is read in windows (qa.doc_stride): no input is truncated
    long_inputs = "windows"

    def __init__(self, config):
        self.config = config
        self.options = config.options
        self.version_2 = bool(config.data.version_2_with_negative)
        self._declared_v2 = False
        self.tokenizer = None
        self.report: dict = {}  # written into run_info.json by the engine: the sub-token answers of training
        if self.options.doc_stride >= config.trainer.max_length:
            raise ConfigError(f"qa.doc_stride={self.options.doc_stride} must be smaller than "
                              f"trainer.max_length={config.trainer.max_length}")

    # --- data ---------------------------------------------------------------------------------
    def load(self, split: str, path: str | None) -> list[dict]:
        if path is None:
            path = SAMPLE / ("train.json" if split == "train" else "eval.json")
        examples, declared_v2 = read_examples(path, need_answers=split != "predict")
        data = self.config.data
        if split in ("train", "eval"):
            key = f"data.{split}_articles"
            examples = select_articles(examples, getattr(data, f"{split}_articles"), key, path)
            if not examples:
                raise DataError(f"{key}={getattr(data, f'{split}_articles')}: no questions in the chosen articles of {path}")
        if split == "train":
            self._declared_v2 = declared_v2
            examples = self._usable_for_training(examples, path)
        elif split == "eval":
            self._check_overlap(examples, path)
            bad = mismatched_answers(examples)
            if bad:
                _note(f"{len(bad)} gold answers in {path} are not found at their answer_start (first question ids: "
                      f"{_first_ids([i for i, _ in bad])}); they are scored by text only, as the official script does")
        for example in examples:
            example["for_training"] = split == "train"
        return examples

    def _usable_for_training(self, examples: list[dict], path) -> list[dict]:
        """Drop answers whose text is not at answer_start, and questions left without an answer."""
        bad = mismatched_answers(examples)
        if not bad:
            return examples
        wrong = set(bad)
        kept = []
        for example in examples:
            answers = example["answers"]
            pairs = [(t, s) for i, (t, s) in enumerate(zip(answers["text"], answers["answer_start"]))
                     if (example["id"], i) not in wrong]
            if not pairs and answers["text"] and not example["is_impossible"]:
                continue
            example["answers"] = {"text": [t for t, _ in pairs], "answer_start": [s for _, s in pairs]}
            kept.append(example)
        _note(f"{len(bad)} answers in {path} are not found in the context at their answer_start (first question "
              f"ids: {_first_ids([i for i, _ in bad])}); they are not trained on, and {len(examples) - len(kept)} "
              "questions left without an answer are skipped")
        return kept

    def _check_overlap(self, examples: list[dict], path) -> None:
        data = self.config.data
        if not isinstance(data.train, str) or not Path(data.train).is_file() or Path(data.train).resolve() != Path(path).resolve():
            return
        chosen = {e["article"] for e in examples}
        trained = set(parse_articles(data.train_articles, "data.train_articles")) if data.train_articles else chosen
        shared = chosen & trained
        if shared:
            _note(f"evaluating on {len(shared)} articles of {path} that training also reads; set "
                  "data.train_articles and data.eval_articles (e.g. 0-39 and 40-47) to keep them apart")

    def setup(self, train_examples: list[dict]) -> None:
        if self.config.data.version_2_with_negative is None:
            self.version_2 = self._declared_v2 or any(e["is_impossible"] for e in train_examples)

    def state_dict(self) -> dict:
        return {"version_2_with_negative": self.version_2}

    def load_state_dict(self, state: dict) -> None:
        self.version_2 = bool(state.get("version_2_with_negative", False))

    # --- model --------------------------------------------------------------------------------
    def load_tokenizer(self, name_or_path: str):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        if not getattr(tokenizer, "is_fast", False):
            raise SFTError(f"the tokenizer of {name_or_path} has no character offsets (not a fast tokenizer); "
                           "question answering needs them to map answers back to the context")
        self.tokenizer = tokenizer
        return tokenizer

    def build_model(self, name_or_path: str):
        from transformers import AutoModelForQuestionAnswering

        from sft_core.kit import with_head

        return with_head(AutoModelForQuestionAnswering, name_or_path, "question answering (span)")

    # --- features and batches -----------------------------------------------------------------
    def _check_questions(self, questions: list[str], ids: list[str]) -> None:
        """Questions are never truncated: each must leave room for more context than the stride."""
        max_length, stride = self.config.trainer.max_length, self.options.doc_stride
        specials = self.tokenizer.num_special_tokens_to_add(pair=True)
        lengths = [len(t) for t in self.tokenizer(questions, add_special_tokens=False)["input_ids"]]
        for qid, n in zip(ids, lengths):
            room = max_length - n - specials
            if room <= stride:
                raise DataError(f"question {qid} has {n} tokens, leaving {max(room, 0)} tokens of context in a window "
                                f"of trainer.max_length={max_length}, not more than qa.doc_stride={stride}; questions "
                                "are never truncated: raise trainer.max_length or lower qa.doc_stride")

    def preprocess(self, examples: dict[str, list]) -> dict[str, list]:
        tok = self.tokenizer
        questions = [q.lstrip() for q in examples["question"]]  # leading spaces only eat window room
        self._check_questions(questions, examples["id"])
        encoded = tok(questions, examples["context"], truncation="only_second", max_length=self.config.trainer.max_length,
                      stride=self.options.doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True)
        training = all(examples["for_training"])
        keys = [k for k in MODEL_INPUTS if k in encoded]
        out: dict[str, list] = {k: [] for k in [*keys, "example_id"]}
        out.update({"start_positions": [], "end_positions": [], "sub_token": []} if training else
                   {"offset_start": [], "offset_end": [], "cls_index": []})
        for i, j in enumerate(encoded["overflow_to_sample_mapping"]):
            ids = encoded["input_ids"][i]
            for k in keys:
                out[k].append(encoded[k][i])
            out["example_id"].append(examples["example_id"][j])
            cls = ids.index(tok.cls_token_id) if tok.cls_token_id in ids else 0
            context = [s == 1 for s in encoded.sequence_ids(i)]
            offsets = encoded["offset_mapping"][i]
            if training:
                answers = examples["answers"][j]
                start, end = _token_span(answers, examples["is_impossible"][j], offsets, context, cls)
                out["start_positions"].append(start)
                out["end_positions"].append(end)
                out["sub_token"].append(start != cls and _cuts_a_token(answers, offsets, start, end))
            else:
                text = examples["context"][j]
                out["offset_start"].append([o[0] if c else -1 for o, c in zip(offsets, context)])
                out["offset_end"].append([_end_of_character(text, o[1]) if c else -1 for o, c in zip(offsets, context)])
                out["cls_index"].append(cls)
        return out

    def finish_features(self, features, split: str):
        """Training: count the answers that start or end inside a token (e.g. "Japan" in one token
        "japanese"); a span model can only predict whole tokens, so it learns, and predicts, the
        smallest token span covering them. The count goes into ``report`` and, when there are any, a note."""
        if split != "train" or "sub_token" not in features.column_names:  # not training, or no question
            return features
        flagged = {i for i, cut in zip(features["example_id"], features["sub_token"]) if cut}
        questions = len(set(features["example_id"]))
        self.report["train"] = {"questions": questions, "windows": len(features), "sub_token_answers": len(flagged)}
        if flagged:
            _note(f"{len(flagged)} of {questions} training answers start or end inside a token; the model learns, and "
                  "predicts, the smallest token span covering each (the whole token), so they cannot match exactly")
        return features.remove_columns(["sub_token"])

    def collate(self, features: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(f["input_ids"]) for f in features)
        pad = self.tokenizer.pad_token_id or 0
        batch = {}
        for key, fill in (("input_ids", pad), ("attention_mask", 0), ("token_type_ids", 0)):
            if key in features[0]:
                batch[key] = torch.tensor([f[key] + [fill] * (longest - len(f[key])) for f in features])
        if "start_positions" in features[0]:  # training features: the targets
            batch["start_positions"] = torch.tensor([f["start_positions"] for f in features])
            batch["end_positions"] = torch.tensor([f["end_positions"] for f in features])
        if "offset_start" in features[0]:  # evaluation features: what predict_step needs, not the model
            batch["context_mask"] = torch.tensor([[o >= 0 for o in f["offset_start"]] + [False] * (longest - len(f["offset_start"]))
                                                  for f in features])
            batch["cls_index"] = torch.tensor([f["cls_index"] for f in features])
        return batch

    # --- evaluation ---------------------------------------------------------------------------
    def predict_step(self, model, batch) -> dict[str, torch.Tensor]:
        """Per window: top-k start and end logits over context tokens, and the null (CLS) score."""
        out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
        start, end = out.start_logits.float(), out.end_logits.float()
        cls = batch["cls_index"].unsqueeze(1)
        null_score = start.gather(1, cls).squeeze(1) + end.gather(1, cls).squeeze(1)
        outside = ~batch["context_mask"]
        lowest = torch.finfo(start.dtype).min
        k = min(self.options.n_best, start.size(1))
        start_logit, start_index = start.masked_fill(outside, lowest).topk(k, dim=1)
        end_logit, end_index = end.masked_fill(outside, lowest).topk(k, dim=1)
        return {"start_index": start_index, "start_logit": start_logit, "end_index": end_index,
                "end_logit": end_logit, "null_score": null_score}

    def postprocess(self, outputs: list[dict], features, examples: list[dict]) -> list[dict]:
        windows: list[list[Window]] = [[] for _ in examples]
        columns = features.select_columns(["example_id", "offset_start", "offset_end"])
        for output, row in zip(outputs, columns):
            windows[row["example_id"]].append(Window(
                output["start_index"], output["start_logit"], output["end_index"], output["end_logit"],
                output["null_score"], row["offset_start"], row["offset_end"]))
        opts = self.options
        return [{"id": example["id"], **best_answer(
                    example["context"], windows[i], n_best=opts.n_best, max_answer_length=opts.max_answer_length,
                    version_2=self.version_2, null_score_diff_threshold=opts.null_score_diff_threshold)}
                for i, example in enumerate(examples)]

    def compute_metrics(self, predictions: list[dict], examples: list[dict]) -> dict[str, float]:
        return squad_scores([p["text"] for p in predictions], [e["answers"]["text"] for e in examples],
                            version="2.0" if self.version_2 else "1.1")

    def gold_predictions(self, examples: list[dict]) -> list[dict]:
        """Each question's first gold answer ("" when unanswerable) as a prediction."""
        predictions = []
        for example in examples:
            answers = example["answers"]
            text, start = (answers["text"][0], answers["answer_start"][0]) if answers["text"] else ("", None)
            predictions.append({"id": example["id"], "text": text, "start": start,
                                "end": None if start is None else start + len(text), "score": None,
                                "probability": 1.0, "null_score_diff": None, "nbest": []})
        return predictions

    def write_predictions(self, path: Path, predictions: list[dict], examples: list[dict]) -> None:
        """``predictions.json`` in the official format {id: answer}; n-best lists (and, for SQuAD
        2.0, the null-score differences the official script takes as --na-prob-file) next to it."""
        _dump(path, {p["id"]: p["text"] for p in predictions})
        _dump(path.with_name(NBEST_FILE), {p["id"]: [_rounded(c) for c in p["nbest"]] for p in predictions})
        if self.version_2:
            _dump(path.with_name(NULL_ODDS_FILE), {p["id"]: p["null_score_diff"] if p["null_score_diff"] is not None
                                                   else 0.0 for p in predictions})

    # --- sft predict --------------------------------------------------------------------------
    def read_inputs(self, texts: list[str]) -> list[dict]:
        if len(texts) % 2:
            raise SFTError("qa takes a question and its context per input: give TEXT arguments in pairs "
                           "(QUESTION CONTEXT ...), --question Q --context C, or --input FILE (JSONL or SQuAD JSON)")
        return self.read_fields([{"question": q, "context": c} for q, c in zip(texts[::2], texts[1::2])])

    def read_fields(self, records: list[dict]) -> list[dict]:
        """Examples from named inputs, e.g. ``sft predict --question Q --context C``."""
        examples = []
        for n, record in enumerate(records, 1):
            for name in self.input_fields:
                if not str(record.get(name) or "").strip():
                    raise SFTError(f"input {n}: empty or missing {name} (give --question and --context)")
            examples.append({"id": str(n), "title": "", "article": 0, "context": record["context"],
                             "question": record["question"], "answers": {"text": [], "answer_start": []},
                             "is_impossible": False, "for_training": False})
        return examples

    def format_prediction(self, prediction: dict, example: dict) -> dict:
        record = {"id": example["id"], "question": example["question"], "answer": prediction["text"],
                  "start": prediction["start"], "end": prediction["end"],
                  "score": None if prediction["score"] is None else round(prediction["score"], 4),
                  "probability": None if prediction["probability"] is None else round(prediction["probability"], 4)}
        if self.version_2:
            record["null_score_diff"] = prediction["null_score_diff"]
        return record


def _token_span(answers: dict, impossible: bool, offsets, context: list[bool], cls: int) -> tuple[int, int]:
    """The first answer's token span in this window, or (cls, cls) when it is not wholly inside."""
    if impossible or not answers["text"]:
        return cls, cls
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])
    first = context.index(True)
    last = len(context) - 1 - context[::-1].index(True)
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return cls, cls
    start = first
    while start <= last and offsets[start][1] <= start_char:
        start += 1
    end = last
    while end >= first and offsets[end][0] >= end_char:
        end -= 1
    return (start, end) if start <= end else (cls, cls)


def _cuts_a_token(answers: dict, offsets, start: int, end: int) -> bool:
    """Whether the first answer's characters begin after token ``start`` begins or end before token
    ``end`` ends: then no token span reproduces the answer exactly."""
    start_char = answers["answer_start"][0]
    return offsets[start][0] < start_char or offsets[end][1] > start_char + len(answers["text"][0])


def _end_of_character(text: str, end: int) -> int:
    """Extend a token's end over combining marks the normaliser dropped ("e" + U+0301 is one "é")."""
    while end < len(text) and unicodedata.combining(text[end]):
        end += 1
    return end


def _rounded(candidate: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in candidate.items()}


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
