"""Tiny random models built in-process for tests: a BERT encoder or a decoder-only LM, each with a
tokenizer trained on the given texts, saved as a Hugging Face folder. Fast and hermetic (no hub).
``sft_core.testing`` re-exports them; importing this module imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable


def example_texts(examples: Iterable[Any]) -> list[str]:
    """Every string inside ``examples`` (through dicts and lists): what a tokenizer should know."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)

    walk(list(examples))
    return found


def tiny_bert(folder: Path, texts: Iterable[str], *, vocab_size: int = 500, hidden: int = 32, layers: int = 2,
              heads: int = 2) -> str:
    """A random BERT encoder and a WordPiece tokenizer trained on ``texts``, saved as a Hugging Face folder.

    Uncased with accents stripped, like the offline MiniLM; 512 positions, so a task's default
    ``trainer.max_length`` fits.
    """
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(list(texts), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=special))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=512,
                        pad_token_id=0)
    with torch.random.fork_rng(devices=[]):  # leave the caller's random state alone
        torch.manual_seed(0)
        model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


#: Decoder-only families ``tiny_decoder`` builds: model_type -> transformers config class name.
DECODER_FAMILIES = {"gpt2": "GPT2Config", "llama": "LlamaConfig", "qwen2": "Qwen2Config"}


def tiny_decoder(folder: Path, texts: Iterable[str], *, family: str = "llama", pad: str = "eos",
                 vocab_size: int = 500, hidden: int = 32, layers: int = 2) -> str:
    """A random decoder-only language model (GPT-2, Llama or Qwen2 architecture) and a byte-level BPE
    tokenizer trained on ``texts`` (cased, as such models' are), saved as a Hugging Face folder.

    ``pad`` says what the tokenizer has to pad with: ``"own"`` a pad token of its own, ``"eos"``
    only an EOS token (as GPT-2 and Llama checkpoints ship), ``"none"`` neither.
    """
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family not in DECODER_FAMILIES:
        raise ValueError(f"family must be one of {', '.join(DECODER_FAMILIES)}, got {family!r}")
    if pad not in ("own", "eos", "none"):
        raise ValueError(f"pad must be 'own', 'eos' or 'none', got {pad!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    tok.train_from_iterator(list(texts), trainers.BpeTrainer(vocab_size=vocab_size,
                                                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    # special tokens after the learnt ones, as in GPT-2 (where id 0 is "!"): padding with 0 is then visibly wrong
    names = {"own": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "pad_token": "<pad>"},
             "eos": {"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}, "none": {}}[pad]
    tok.add_special_tokens(list(dict.fromkeys(names.values())))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, **names)
    ids = {f"{k[:-6]}_token_id": tok.token_to_id(v) for k, v in names.items()}
    size = tok.get_vocab_size()
    config_class = getattr(transformers, DECODER_FAMILIES[family])
    if family == "gpt2":
        config = config_class(vocab_size=size, n_embd=hidden, n_layer=layers, n_head=2, n_positions=512,
                              bos_token_id=ids.get("bos_token_id"), eos_token_id=ids.get("eos_token_id"))
    else:
        config = config_class(vocab_size=size, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                              num_key_value_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
                              tie_word_embeddings=True, bos_token_id=ids.get("bos_token_id"),
                              eos_token_id=ids.get("eos_token_id"), pad_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
