"""``sft export --format gguf``: a causal LM as one GGUF file for llama.cpp and Ollama, verified by readers
sft did not write.

Written in pure Python with the ``gguf`` package (llama.cpp's own file library): no network and no
compiled llama.cpp. The file holds what llama.cpp needs to run the model as it was trained:

- the weights under llama.cpp's tensor names (``gguf``'s name map), the query and key projections of
  Llama models permuted into the rotary layout llama.cpp uses, norms and biases in fp32, matrices in
  f16, bf16, q8_0 or q4_0 (at q4_0 the embedding, which is also the output layer when tied, stays at
  q8_0, as llama.cpp's own q4 mixes keep the output layer at more bits);
- the hyperparameters, the byte-level BPE tokenizer (tokens, merges, token types, the pre-tokenizer
  name llama.cpp splits text with, special-token ids, whether BOS is added), the chat template, and
  the end-of-turn id found by rendering a conversation, so that generation stops where training
  taught it to.

Nothing is written until the file has been read back by transformers' GGUF loader (code sft did not
write): its next-token logits on real prompts are compared with the PyTorch model's, and
conversations rendered by the template embedded in the file, tokenized by the tokenizer read from
the file, must give exactly the ids the model was trained on. Where ``llama-cpp-python`` is
installed, llama.cpp itself loads the file, tokenizes the same conversations and continues the
prompts greedily (``llamacpp.py``). An Ollama ``Modelfile`` whose template is checked against the
chat template (``ollama.py``) is written beside the file, and the report goes into
``sft_task.json``; the folder is renamed into place only when complete.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ...errors import SFTError
from ..files import staged_dir

QUANTS = ("f16", "bf16", "q8_0", "q4_0")
DEFAULT_QUANT = "f16"
#: Least share of positions whose top token must be the PyTorch model's, per ``--quantize``. The
#: quantized ones lose information by design: their defaults sit below what they measured on SmolLM2
#: (see the docs). f16 and bf16 only round the weights: there every top token must survive except
#: at a near-tie, where the PyTorch model's two best candidates are within ``TIE`` logits.
MIN_AGREEMENT = {"q8_0": 0.9, "q4_0": 0.5}
#: A near-tie: the PyTorch model itself hesitates (the two probabilities within 10% of each other).
TIE = 0.1
#: Model families exported: transformers' model_type -> (llama.cpp architecture, whether q/k are permuted)
FAMILIES = {"llama": ("llama", True), "qwen2": ("qwen2", False)}
FAMILY_NAMES = "Llama (SmolLM2, Llama 3) and Qwen2"
ENCODERS = ("bert", "roberta", "distilbert", "deberta", "deberta-v2", "electra", "xlm-roberta", "albert", "mpnet")

#: Probe conversation for the template checks when the data has none.
PROBE = [{"role": "system", "content": "You answer briefly."},
         {"role": "user", "content": "What is 12 + 30?"},
         {"role": "assistant", "content": "42."},
         {"role": "user", "content": "And in words, please: café?"},
         {"role": "assistant", "content": "Forty-two.\nThat is all."}]


def file_name(model_dir: str, quantize: str) -> str:
    folder = Path(model_dir.rstrip("/\\") or ".").resolve() if Path(model_dir).exists() else Path(model_dir)
    base = folder.parent.name if folder.name == "model" else folder.name
    return f"{base or 'model'}-{quantize}.gguf"


# --- loading -------------------------------------------------------------------------------------

def load_causal_lm(model: str, host):
    """(task or None, config or None, tokenizer, model in fp32, adapters merged) for a folder written by
    ``sft run``, a Hugging Face folder or an alias."""
    import torch

    from ... import engine
    from ..loading import is_sft_folder
    from ...models import adapters, last_layer
    from ...models.aliases import resolve_model

    engine.quiet_libraries()
    if is_sft_folder(model):
        _, config, task = engine.load_saved(model, host, [])
        tokenizer, loaded = engine.load_model(task, model)
    else:
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        task = config = None
        path = resolve_model(model)
        try:
            kind = AutoConfig.from_pretrained(path).model_type
        except (OSError, ValueError) as exc:
            raise SFTError(f"cannot load model {model!r}: {str(exc).strip().splitlines()[0]}") from None
        _check_family(kind, model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if adapters.is_peft_model(loaded):
        loaded = loaded.merge_and_unload()
    last_layer.uninstall(loaded)
    _check_family(loaded.config.model_type, model)
    if loaded.get_output_embeddings() is None or not hasattr(loaded, "model"):
        raise SFTError(f"{model} is a {type(loaded).__name__}, not a causal language model; GGUF export takes the "
                       f"models of `sft run --task instruct` (an encoder exports with --format onnx)")
    return task, config, tokenizer, loaded.to("cpu", torch.float32).eval()


def _check_family(model_type: str, model: str) -> None:
    if model_type in FAMILIES:
        return
    if model_type in ENCODERS:
        raise SFTError(f"{model} is an encoder ({model_type}); GGUF is for causal LMs run by llama.cpp. Export it "
                       f"with: sft export --model {model} --format onnx")
    raise SFTError(f"{model} is a {model_type} model; sft exports GGUF for the {FAMILY_NAMES} families")


# --- the tokenizer ---------------------------------------------------------------------------------

#: Pre-tokenizer splits of byte-level BPE tokenizers, by the name llama.cpp gives them.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


def pre_tokenizer_name(tokenizer) -> str:
    """llama.cpp's name for how ``tokenizer`` splits text before its merges, read from the tokenizer's
    own definition; an SFTError for a tokenizer llama.cpp would split differently."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    # NFC (Qwen2's) changes no text that is already composed, as nearly all text is; llama.cpp applies none
    if model.get("type") != "BPE" or (spec.get("normalizer") or {"type": "NFC"}).get("type") != "NFC":
        raise SFTError(f"the tokenizer is a {model.get('type')} tokenizer"
                       f"{' with a normalizer' if spec.get('normalizer') else ''}; sft writes GGUF for byte-level "
                       f"BPE tokenizers ({FAMILY_NAMES})")
    steps = pre.get("pretokenizers") if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern in SPLITS:
            return SPLITS[pattern]
    raise SFTError(f"the tokenizer splits text with {' + '.join(map(str, kinds))}, which sft cannot name for "
                   f"llama.cpp (it knows GPT-2's, SmolLM's, Llama 3's and Qwen2's splits)")


def end_of_turn_id(tokenizer) -> int | None:
    """The special token that closes an assistant turn in the chat template (``<|im_end|>``,
    ``<|eot_id|>``), found by rendering one; None without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]
    full = encode(tokenizer, render(tokenizer, conv, False))
    prompt = encode(tokenizer, render(tokenizer, conv[:1], True))
    special = set(tokenizer.all_special_ids)
    return next((i for i in full[len(prompt):] if i in special), None)


def render(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def encode(tokenizer, text: str) -> list[int]:
    """Ids as sft trains on them: the template writes the special tokens, nothing is added."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def adds_bos(tokenizer) -> bool:
    """Whether llama.cpp should add BOS to what it tokenizes: when the tokenizer adds one and the chat
    template does not write it already (Llama 3's does: adding it too gives the double BOS that
    makes exported models answer badly). Either way a rendered conversation gets exactly one."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    if bos is None or not ids or ids[0] != bos:
        return False
    if getattr(tokenizer, "chat_template", None):
        rendered = encode(tokenizer, render(tokenizer, [{"role": "user", "content": "a"}], True))
        return not (rendered and rendered[0] == bos)
    return True


def _vocabulary(tokenizer, size: int) -> tuple[list[str], list[int]]:
    """Tokens in id order (padded to the model's embedding rows) and their llama.cpp token types."""
    from gguf import TokenType

    by_id = {i: t for t, i in tokenizer.get_vocab().items()}
    added = {i: t for i, t in tokenizer.added_tokens_decoder.items()}
    if max(by_id) >= size:
        raise SFTError(f"the tokenizer has ids up to {max(by_id)} but the model only {size} embedding rows")
    tokens, types = [], []
    for i in range(size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(int(TokenType.UNUSED))
            continue
        tokens.append(by_id[i])
        if i in added:
            types.append(int(TokenType.CONTROL if added[i].special else TokenType.USER_DEFINED))
        else:
            types.append(int(TokenType.NORMAL))
    return tokens, types


def _merges(tokenizer) -> list[str]:
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"].get("merges") or []
    return [m if isinstance(m, str) else " ".join(m) for m in merges]


# --- the file ------------------------------------------------------------------------------------

def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type") or (getattr(config, "rope_scaling", None) or {}).get("rope_type") or "default"
    if kind != "default":
        raise SFTError(f"the model uses rope scaling {kind!r}, which sft's GGUF export does not write")
    theta = params.get("rope_theta", getattr(config, "rope_theta", None))
    return float(theta if theta is not None else 10000.0)


def _permute(weights, heads: int):
    """HF's rotary layout (two halves) -> llama.cpp's (interleaved pairs), per head; rows of a 2-D
    weight or entries of a bias."""
    shape = weights.shape
    return weights.reshape(heads, 2, shape[0] // heads // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def _tensor(data, qtype_name: str, gguf):
    """(bytes-or-array, raw_dtype) of a 2-D fp32 array at ``qtype_name``; rows that do not fill whole
    quantization blocks fall back to f16, as llama.cpp's converter does."""
    import numpy as np

    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    if qtype_name == "f16":
        return data.astype(np.float16), None, "f16"
    qtype = {"bf16": Q.BF16, "q8_0": Q.Q8_0, "q4_0": Q.Q4_0}[qtype_name]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        return data.astype(np.float16), None, "f16"
    return quants.quantize(data, qtype), qtype, qtype_name


def write_gguf(path: Path, model, tokenizer, quantize: str, name: str, eot: int | None) -> dict:
    """Write ``model`` and ``tokenizer`` to ``path``; returns what was written (for the report)."""
    import gguf
    import numpy as np

    config = model.config
    arch, permute = FAMILIES[config.model_type]
    if getattr(config, "mlp_bias", False):
        raise SFTError("the model has MLP biases, which llama.cpp's Llama architecture does not load")
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    vocab_rows = model.get_input_embeddings().weight.shape[0]
    pre = pre_tokenizer_name(tokenizer)
    tokens, types = _vocabulary(tokenizer, vocab_rows)

    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(kv_heads))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_dimension_count(int(head_dim))
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))
    writer.add_vocab_size(int(vocab_rows))
    file_type = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
                 "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0}[quantize]
    writer.add_file_type(int(file_type))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(_merges(tokenizer))
    special = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
               "pad": tokenizer.pad_token_id, "eot": eot}
    for key, adder in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id),
                       ("eot", writer.add_eot_token_id)):
        if special[key] is not None:
            adder(int(special[key]))
    bos = adds_bos(tokenizer)
    writer.add_add_bos_token(bos)
    writer.add_add_eos_token(False)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str) and template:
        writer.add_chat_template(template)

    names = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, arch.upper()), layers)
    state = model.state_dict()
    tied = "lm_head.weight" in state and state["lm_head.weight"].data_ptr() == state[
        "model.embed_tokens.weight"].data_ptr()
    counts: dict[str, int] = {}
    for hf_name, value in state.items():
        if hf_name == "lm_head.weight" and tied:
            continue  # llama.cpp uses the token embedding as the output layer when there is none
        target = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise SFTError(f"tensor {hf_name} has no llama.cpp name in the {arch} architecture")
        data = value.detach().to("cpu").float().numpy()
        if permute and (".self_attn.q_proj." in hf_name or ".self_attn.k_proj." in hf_name):
            data = _permute(data, heads if ".q_proj." in hf_name else kv_heads)
        if data.ndim == 1:
            array, raw, kind = data.astype(np.float32), None, "f32"
        else:
            wanted = "q8_0" if quantize == "q4_0" and target in ("token_embd.weight", "output.weight") else quantize
            array, raw, kind = _tensor(data, wanted, gguf)
        writer.add_tensor(target, array, raw_dtype=raw)
        counts[kind] = counts.get(kind, 0) + 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"architecture": arch, "tensors": counts, "tied_output": tied,
            "tokenizer": {"model": "gpt2", "pre": pre, "tokens": len(tokens), "merges": len(_merges(tokenizer)),
                          "add_bos": bos, **{f"{k}_id": v for k, v in special.items()},
                          "chat_template": bool(template)}}


# --- verification ----------------------------------------------------------------------------------

def verification_inputs(task, config, tokenizer, data: str | None, samples: int):
    """(prompts as id lists, conversations, where they came from): the run's evaluation data, ``--data``,
    or, for a model that was not trained by sft, the instruct task's reading of ``--data``."""
    from ..batching import build_features
    from ..sources import resolve as resolve_source

    examples, where = [], None
    if task is not None:
        source = data or config.data.eval
        examples = task.load("eval", resolve_source(source))[:samples]
        where = source or "the task's built-in sample"
        if examples:  # a feature that holds its answer says where the prompt ends (prompt_len)
            features = build_features(task, config, tokenizer, examples, "predict", use_cache=False)
            prompts = [(list(f["input_ids"]), f.get("prompt_len") or len(f["input_ids"])) for f in features]
        else:
            prompts = []
    else:
        prompts = []
        if data:
            examples = _read_conversations(data)[:samples]
            where = data
    conversations = [e["messages"] for e in examples if _is_conversation(e.get("messages"))]
    if not getattr(tokenizer, "chat_template", None):
        conversations = []
    if conversations and task is None:
        prompts = [_sequence(tokenizer, c) for c in conversations]
    if not prompts:  # a model with no data of its own: the probe conversation, or plain text
        if getattr(tokenizer, "chat_template", None):
            conversations = conversations or [PROBE]
            prompts = [_sequence(tokenizer, PROBE)]
        else:
            ids = encode(tokenizer, "The capital of France is Paris. The capital of Italy is")
            prompts = [(ids, len(ids))]
        where = where or "a built-in probe"
    if getattr(tokenizer, "chat_template", None) and PROBE not in conversations:
        conversations = [*conversations, PROBE]
    return prompts, conversations, where


def _sequence(tokenizer, conversation: list[dict]) -> tuple[list[int], int]:
    """(ids of the whole conversation, length of the prompt of its last answer)."""
    if conversation[-1]["role"] != "assistant":
        ids = encode(tokenizer, render(tokenizer, conversation, True))
        return ids, len(ids)
    return (encode(tokenizer, render(tokenizer, conversation, False)),
            len(encode(tokenizer, render(tokenizer, conversation[:-1], True))))


def _is_conversation(value) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and m.get("role") in ("system", "user", "assistant")
        for m in value)


def _read_conversations(path: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise SFTError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
    return rows


def compare_logits(model, reread, prompts: list[tuple[list[int], int]]) -> dict:
    """Top-token agreement and the largest logit difference of ``reread`` against ``model`` at every
    position of each sequence (prompt and answer), and at the end of each prompt (the first token of
    the answer: the next token a user gets)."""
    import torch

    positions = agree = next_agree = 0
    worst = 0.0
    margins = []  # at each position where the top tokens differ: how much PyTorch preferred its own
    with torch.inference_mode():
        for ids, prompt_len in prompts:
            x = torch.tensor([ids])
            a, b = model(input_ids=x).logits[0].float(), reread(input_ids=x).logits[0].float()
            worst = max(worst, float((a - b).abs().max()))
            mine, theirs = a.argmax(-1), b.argmax(-1)
            same = mine == theirs
            positions += len(ids)
            agree += int(same.sum())
            next_agree += int(same[prompt_len - 1])
            at = (~same).nonzero().flatten()
            margins += (a[at, mine[at]] - a[at, theirs[at]]).tolist()
    return {"prompts": len(prompts), "positions": positions, "top_token_agreement": round(agree / positions, 4),
            "next_token_agreement": round(next_agree / len(prompts), 4), "max_abs_logit_diff": round(worst, 5),
            "differing_positions": len(margins), "differing_beyond_near_ties": sum(m > TIE for m in margins),
            "largest_margin_where_differing": round(max(margins), 5) if margins else None}


def check_template(tokenizer, reread_tokenizer, conversations: list[list[dict]], eot: int | None,
                   metadata: dict) -> dict:
    """Conversations rendered by the template embedded in the file and tokenized by the tokenizer read
    from it, BOS added as the file says (llama.cpp's way), against the ids sft trains on and serves."""
    embedded = metadata.get("tokenizer.chat_template")
    if not getattr(tokenizer, "chat_template", None):
        return {"checked": 0, "note": "the model has no chat template"}
    if embedded != tokenizer.chat_template:
        raise SFTError("the chat template read back from the GGUF file differs from the model's; nothing was written")
    bos = [metadata["tokenizer.ggml.bos_token_id"]] if metadata.get("tokenizer.ggml.add_bos_token") else []
    for key, want in (("tokenizer.ggml.eos_token_id", tokenizer.eos_token_id), ("tokenizer.ggml.eot_token_id", eot)):
        if want is not None and metadata.get(key) != want:
            raise SFTError(f"{key} reads back as {metadata.get(key)}, not {want}; nothing was written")
    checked = 0
    for n, conv in enumerate(conversations):
        variants = [(conv, False)]
        if conv[-1]["role"] == "assistant":
            variants.append((conv[:-1], True))  # what a server gives the model to answer
        for messages, gen in variants:
            want = encode(tokenizer, render(tokenizer, messages, gen))
            got = bos + encode(reread_tokenizer, render(reread_tokenizer, messages, gen))
            if got != want:
                at = next((i for i, (x, y) in enumerate(zip(got, want)) if x != y), min(len(got), len(want)))
                raise SFTError(
                    f"conversation {n + 1}{' (generation prompt)' if gen else ''}: the template and tokenizer in the "
                    f"GGUF file give other ids than the model was trained on, from token {at} "
                    f"({reread_tokenizer.decode(got[at:at + 4])!r} against {tokenizer.decode(want[at:at + 4])!r}); "
                    "nothing was written")
            checked += 1
    return {"checked": checked, "conversations": len(conversations), "identical_ids": True,
            "double_bos": False, "add_bos": bool(bos), "eot_id": eot}


def read_metadata(path: Path) -> dict:
    import gguf

    reader = gguf.GGUFReader(str(path))
    skip = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
    return {k: f.contents() for k, f in reader.fields.items() if k not in skip and not k.startswith("GGUF.")}


def reread(path: Path):
    """(tokenizer, model) as transformers reads the file (dequantised to fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import functools

    from transformers import modeling_gguf_pytorch_utils as loader

    bar = loader.tqdm  # transformers' GGUF loader draws a progress bar of its own
    loader.tqdm = functools.partial(bar, disable=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    finally:
        loader.tqdm = bar
    return tokenizer, model.eval()


# --- the command -----------------------------------------------------------------------------------

def export_gguf(model_dir: str, output: str, host, quantize: str = DEFAULT_QUANT, data: str | None = None,
                samples: int = 16, min_agreement: float | None = None, overwrite: bool = False,
                llama_cpp: bool | None = None, echo=lambda line: print(line, file=sys.stderr)) -> dict:
    """Export ``model_dir`` to ``output`` as GGUF; returns the report written into ``output/sft_task.json``.

    ``llama_cpp``: True to require llama.cpp's own check, False to skip it, None to run it where
    ``llama-cpp-python`` is installed.
    """
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SFTError("sft export --format gguf needs the gguf package: pip install 'sft-core[llm]'") from None
    import torch

    from ..checkpoint import TASK_FILE
    from ...models.onnx_runtime import EXPORT_KEY
    from . import llamacpp

    if quantize not in QUANTS:
        raise SFTError(f"--quantize {quantize!r}: GGUF export writes {', '.join(QUANTS)}")
    threshold = MIN_AGREEMENT.get(quantize) if min_agreement is None else min_agreement
    out = Path(output)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SFTError(f"{out} exists and is not empty; give another --output or --overwrite")
    if Path(model_dir).exists() and Path(model_dir).resolve() == out.resolve():
        raise SFTError("--output must be another folder than --model")
    if llama_cpp and not llamacpp.available():
        raise SFTError(f"--llama-cpp: llama-cpp-python is not installed ({llamacpp.INSTALL})")

    started = time.perf_counter()
    task, config, tokenizer, model = load_causal_lm(model_dir, host)
    eot = end_of_turn_id(tokenizer)
    prompts, conversations, where = verification_inputs(task, config, tokenizer, data, samples)
    name = file_name(model_dir, quantize)
    echo(f"exporting {model_dir} ({model.config.model_type}, {sum(p.numel() for p in model.parameters()):,} "
         f"parameters) to GGUF {quantize}")

    with staged_dir(out) as work:
        path = work / name
        written = write_gguf(path, model, tokenizer, quantize, Path(model_dir).name, eot)
        report = {"format": "gguf", "quantize": quantize, "file": name, **written,
                  "exported_from": str(model_dir), "torch": torch.__version__,
                  "gguf": _version("gguf"), "size_mb": round(path.stat().st_size / 2**20, 1)}
        metadata = read_metadata(path)
        reread_tokenizer, reread_model = reread(path)
        logits = compare_logits(model, reread_model, prompts)
        template = check_template(tokenizer, reread_tokenizer, conversations, eot, metadata)
        report["verification"] = {"reader": f"transformers {_version('transformers')}", "data": where,
                                  "min_agreement": threshold, "near_tie": TIE, **logits, "template": template}
        ties = (f"; of the {logits['differing_positions']} that differ, {logits['differing_beyond_near_ties']} beyond a "
                f"near-tie (PyTorch's largest margin there {logits['largest_margin_where_differing']:.3g} logits)"
                if logits["differing_positions"] else "")
        echo(f"transformers read it back: top token equal at {logits['top_token_agreement']:.2%} of "
             f"{logits['positions']} positions of {logits['prompts']} conversations from {where} (first answer token "
             f"{logits['next_token_agreement']:.2%}), max |logit difference| {logits['max_abs_logit_diff']:.3g}{ties}; "
             f"template: {template.get('checked', 0)} renderings tokenize to the trained ids")
        if threshold is None and logits["differing_beyond_near_ties"]:
            raise SFTError(f"the {quantize} file's top token differs from PyTorch's at {logits['differing_beyond_near_ties']} "
                           f"positions where PyTorch preferred its own by more than {TIE} logits (up to "
                           f"{logits['largest_margin_where_differing']:.3g}): rounding to {quantize} cannot explain "
                           "that; nothing was written")
        if threshold is not None and logits["top_token_agreement"] < threshold:
            raise SFTError(f"the {quantize} file's top token agrees with PyTorch's at {logits['top_token_agreement']:.2%} "
                           f"of the positions, below --min-agreement {threshold:g}; nothing was written")
        if llama_cpp is not False and llamacpp.available():
            report["llama_cpp"] = llamacpp.check(path, prompts, conversations, tokenizer, reread_model,
                                                 original_model=model, echo=echo)
        else:
            why = "--no-llama-cpp" if llama_cpp is False else f"llama-cpp-python is not installed ({llamacpp.INSTALL})"
            report["llama_cpp"] = {"skipped": why}
            echo(f"llama.cpp's own check skipped: {why}")
        del reread_model
        report["modelfile"] = _write_modelfile(work, name, tokenizer, eot)
        report["export_seconds"] = round(time.perf_counter() - started, 1)
        info = {}
        if (Path(model_dir) / TASK_FILE).is_file():
            info = json.loads((Path(model_dir) / TASK_FILE).read_text(encoding="utf-8"))
        info[EXPORT_KEY] = report
        (work / TASK_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return report


def _write_modelfile(work: Path, name: str, tokenizer, eot: int | None) -> dict:
    from . import ollama

    stops = [tokenizer.convert_ids_to_tokens(i) for i in dict.fromkeys(
        x for x in (eot, tokenizer.eos_token_id) if x is not None)]
    if not getattr(tokenizer, "chat_template", None):
        template, note, result = None, "the model has no chat template", {"template": None}
    else:
        try:
            template, parts = ollama.derive_go_template(lambda m, g: render(tokenizer, m, g))
            checked = ollama.verify_go_template(template, lambda m, g: render(tokenizer, m, g))
            result = {"template": "derived from the chat template", "conversations_checked": checked,
                      "default_system": parts.get("default_system"), "trims_content": parts.get("trims_content")}
            note = (f"the chat template strips whitespace around the content of {', '.join(parts['trims_content'])} "
                    "messages; this template passes contents as they are sent" if parts.get("trims_content") else None)
        except ollama.TemplateUnsupported as exc:
            template, note, result = None, f"the chat template could not be expressed as one: {exc}", {"template": None}
    if note:
        result["note"] = note
    (work / "Modelfile").write_text(ollama.modelfile(name, template, stops, note), encoding="utf-8")
    return {**result, "stops": stops}


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "unknown"
