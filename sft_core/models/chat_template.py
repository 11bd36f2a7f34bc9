"""The chat template, and conversations turned into token ids with the loss mask.

Shared by every task that trains a causal LM on conversations (instruction tuning, preference
tuning): plugins reach it as ``sft_core.kit.chat_template``. Imports no torch.

One rendering rule serves training, evaluation, ``sft predict``, ``sft chat`` and serving: the
tokenizer's chat template (saved with the model). A conversation is rendered as text and encoded
without adding special tokens (the template writes them, so BOS cannot come twice). Assistant turn
``i`` spans the tokens between the rendering of the turns before it with the generation prompt and
the rendering up to and including it, less trailing whitespace: its content and its end-of-turn
token. Both renderings must be token prefixes of the whole conversation; that is the same check that
guarantees that the prompt a served model is given is exactly what it was trained to continue.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sft_core.errors import ConfigError, DataError

IGNORE = -100

#: ChatML (as SmolLM2, Qwen): ``<|im_start|>role\ncontent<|im_end|>\n``.
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def resolve_template(tokenizer, option: str | None, model_name: str) -> bool:
    """Give ``tokenizer`` the chat template ``option`` asks for; returns True when tokens were added
    to its vocabulary (the model's embeddings must then grow)."""
    added = False
    if option is None:
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"the tokenizer of {model_name} has no chat template; set instruct.chat_template: chatml "
                              "(or a path to a Jinja template file)")
        return False
    if option == "chatml":
        missing = [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": list(CHATML_TOKENS)})
            added = True
        tokenizer.chat_template = CHATML
        return added
    path = Path(option)
    if not path.is_file():
        raise ConfigError(f"instruct.chat_template: {option!r} is neither 'chatml' nor a template file")
    tokenizer.chat_template = path.read_text(encoding="utf-8")
    return False


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as exc:  # jinja raises TemplateError and others: name the template as the cause
        raise DataError(f"the chat template failed on a conversation: {exc}") from None


def encode_text(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The ids a model is given to answer ``messages`` (ending with a user turn)."""
    return encode_text(tokenizer, render(tokenizer, messages, True))


@dataclass
class Encoded:
    input_ids: list[int]
    spans: list[tuple[int, int]]  # [start, end) of every assistant turn, in token positions


def _mismatch(tokenizer, full: list[int], part: list[int]) -> str:
    at = next((i for i, (a, b) in enumerate(zip(full, part)) if a != b), min(len(full), len(part)))
    show = lambda ids: repr(tokenizer.decode(ids[max(0, at - 3):at + 3]))  # noqa: E731
    return f"they differ at token {at}: {show(part)} against {show(full)} in the conversation"


def encode(tokenizer, messages: list[dict], where: str, whitespace: frozenset[int]) -> Encoded:
    """Token ids of a conversation and the spans of its assistant turns; checks the template.

    ``whitespace``: ids of tokens that decode to whitespace only (trimmed from a turn's end).
    """
    full = encode_text(tokenizer, render(tokenizer, messages, False))
    bos = tokenizer.bos_token_id
    if bos is not None and len(full) > 1 and full[0] == bos and full[1] == bos:
        raise DataError(f"{where}: the rendered conversation starts with BOS twice ({tokenizer.bos_token!r}); "
                        "the chat template writes BOS and something adds it again")
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = encode_text(tokenizer, render(tokenizer, messages[:i], True))
        upto = encode_text(tokenizer, render(tokenizer, messages[:i + 1], False))
        for name, part in (("the generation prompt", before), ("the conversation up to this answer", upto)):
            if full[:len(part)] != part:
                raise DataError(
                    f"{where}: the chat template renders {name} (assistant turn {i}) as something that is not a "
                    f"token prefix of the whole conversation, so the model would be served a prompt it was not "
                    f"trained on; {_mismatch(tokenizer, full, part)}")
        end = len(upto)
        while end > len(before) and upto[end - 1] in whitespace:
            end -= 1
        if end > len(before):
            spans.append((len(before), end))
    return Encoded(full, spans)


def whitespace_ids(tokenizer) -> frozenset[int]:
    """Ids of the vocabulary's tokens that decode to whitespace only (e.g. the newline after ``<|im_end|>``)."""
    found = set()
    for token, index in tokenizer.get_vocab().items():
        if index in tokenizer.all_special_ids:
            continue
        text = tokenizer.convert_tokens_to_string([token])
        if text and not text.strip():
            found.add(index)
    return frozenset(found)


def labels_for(encoded: Encoded, train_on: str) -> list[int]:
    """Labels: the ids where the loss is taken, ``IGNORE`` elsewhere; the first position never
    (nothing predicts it)."""
    ids = encoded.input_ids
    if train_on == "all":
        labels = list(ids)
    else:
        labels = [IGNORE] * len(ids)
        spans = encoded.spans[-1:] if train_on == "last_turn" else encoded.spans
        for start, end in spans:
            labels[start:end] = ids[start:end]
    if labels:
        labels[0] = IGNORE
    return labels


def end_of_turn_ids(tokenizer, encoded: Encoded) -> list[int]:
    """The ids generation stops at: EOS, and the token that ends an assistant turn in the template."""
    stops = []
    if tokenizer.eos_token_id is not None:
        stops.append(tokenizer.eos_token_id)
    if encoded.spans:
        last = encoded.input_ids[encoded.spans[0][1] - 1]
        if last in tokenizer.all_special_ids and last not in stops:
            stops.append(last)
    return stops
