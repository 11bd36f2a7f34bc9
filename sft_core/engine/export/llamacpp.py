"""llama.cpp's own check of an exported GGUF file, through ``llama-cpp-python`` where it is installed.

llama.cpp is the program the file is for, and its code shares nothing with sft's writer or with
transformers' reader: it loads the file, tokenizes the conversations rendered by the chat template
(special tokens parsed, BOS added as the file says) and continues the verification prompts greedily.
Its ids must be the ids sft trains on; its continuations are compared token by token with the
greedy continuations transformers produces from the same file (so that quantization, which both
readers see alike, is not counted as a difference).

``llama-cpp-python`` ships no wheel for every platform and builds llama.cpp from source on install
(about 5 minutes on 2 cores), so it is an optional extra, and the check is skipped without it.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

INSTALL = ("make setup-llamacpp, or CMAKE_ARGS=\"-DLLAVA_BUILD=OFF\" pip install llama-cpp-python; it builds llama.cpp "
           "from source, about 5 minutes on 2 cores")
NEW_TOKENS = 24


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def check(path: Path, prompts: list[tuple[list[int], int]], conversations: list[list[dict]], tokenizer,
          reread_model, original_model=None, new_tokens: int = NEW_TOKENS,
          echo=lambda line: print(line, file=sys.stderr)) -> dict:
    """Load ``path`` in llama.cpp; returns its tokenization and greedy-agreement figures: against
    transformers reading the same file, and (``original_model``) against the PyTorch model, which
    also counts what the quantization changed. An SFTError when llama.cpp cannot load the file or
    tokenizes a conversation differently from training."""
    import llama_cpp

    from ...errors import SFTError
    from .gguf import encode, render

    longest = max(n for _, n in prompts) + new_tokens
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=max(512, longest + 8), n_threads=_threads(), verbose=False,
                              n_batch=512)
    except Exception as exc:  # llama.cpp's loader says little beyond failing; its log is off (verbose=False)
        raise SFTError(f"llama.cpp could not load {path.name}: {exc}; nothing was written") from None
    tokenized = 0
    for n, conv in enumerate(conversations):
        text = render(tokenizer, conv, False)
        want = encode(tokenizer, text)
        got = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        if got != want:
            at = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
            raise SFTError(f"llama.cpp tokenizes conversation {n + 1} differently from training, from token {at} "
                           f"({got[at:at + 4]} against {want[at:at + 4]}); nothing was written")
        tokenized += 1
    stops = {i for i in (llm.token_eos(), _eot(llm)) if i is not None and i >= 0}
    mine = [_greedy_llama(llm, ids[:n], new_tokens, stops) for ids, n in prompts]
    result = {"llama_cpp_python": _version(), "loaded": True, "conversations_tokenized_identically": tokenized,
              "prompts": len(prompts), "new_tokens": new_tokens}
    references = {"transformers": reread_model, "pytorch": original_model}
    for name, model in references.items():
        if model is None:
            continue
        theirs = [_greedy_transformers(model, ids[:n], new_tokens, stops) for ids, n in prompts]
        same, share = _agreement(mine, theirs)
        key = "" if name == "transformers" else "_pytorch"
        result[f"identical_continuations{key}"], result[f"token_agreement{key}"] = same, share
    echo(f"llama.cpp {result['llama_cpp_python']} loaded it: {tokenized} conversations tokenized as in training; "
         f"greedy continuations identical to transformers' reading of the file for {result['identical_continuations']} "
         f"of {len(prompts)} prompts ({result['token_agreement']:.2%} of the tokens before the first difference)"
         + (f", to the PyTorch model's for {result['identical_continuations_pytorch']}"
            if original_model is not None else ""))
    llm.close()
    return result


def _agreement(mine: list[list[int]], theirs: list[list[int]]) -> tuple[int, float]:
    """(continuations identical, share of the tokens that match before the first difference)."""
    same = matched = total = 0
    for a, b in zip(mine, theirs):
        matched += next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        total += max(len(a), len(b))
        same += a == b
    return same, round(matched / total, 4) if total else 1.0


def _eot(llm):
    try:
        return llama_cpp_eot(llm)
    except Exception:
        return None


def llama_cpp_eot(llm) -> int | None:
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    value = llama_cpp.llama_vocab_eot(vocab)
    return None if value < 0 else int(value)


def _greedy_llama(llm, ids: list[int], n: int, stops: set[int]) -> list[int]:
    llm.reset()
    out = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        if token in stops:
            break
        out.append(int(token))
        if len(out) >= n:
            break
    return out


def _greedy_transformers(model, ids: list[int], n: int, stops: set[int]) -> list[int]:
    import torch

    with torch.inference_mode():
        x = torch.tensor([ids])
        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False,
                             eos_token_id=sorted(stops) or None, pad_token_id=next(iter(stops), 0))[0, len(ids):]
    result = []
    for token in out.tolist():
        if token in stops:
            break
        result.append(int(token))
    return result


def _threads() -> int:
    return max(1, min(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, 8))


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return "unknown"
