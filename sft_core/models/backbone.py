"""What the engine does to every task's tokenizer and model, whatever the task: the pad token,
gradient checkpointing, and counting what trains.

Decoder-only checkpoints (GPT-2, Llama, Qwen, SmolLM2) often come without a pad token, and a model
config that never learns the tokenizer's: batches then pad with id 0 (a real token in GPT-2's
vocabulary) and a sequence classifier cannot find the last real token. The engine resolves the pad
token once, when the tokenizer is loaded (the tokenizer's own, else its EOS token), and writes the
same id into the model's config, so the collators (which pad with ``tokenizer.pad_token_id``), the
model and the saved folder agree. Padding is on the right; a sequence classifier then reads the last
non-pad token, and since attention is causal nothing before it sees the padding.
"""

from __future__ import annotations

from ..errors import ConfigError, SFTError


def ensure_pad_token(tokenizer, name: str) -> None:
    """Give ``tokenizer`` a pad token if it has none: its EOS token, else a one-line error."""
    if tokenizer is None or getattr(tokenizer, "pad_token_id", None) is not None:
        return
    eos = getattr(tokenizer, "eos_token", None)
    if eos is None:
        raise SFTError(f"the tokenizer of {name} has neither a pad token nor an EOS token to pad batches with; "
                       "save the tokenizer with a pad token (tokenizer.add_special_tokens({'pad_token': ...}) and "
                       "model.resize_token_embeddings) or choose another model")
    tokenizer.pad_token = eos


def sync_pad_token(model, tokenizer) -> None:
    """Write the tokenizer's pad id into the model's config (and generation config), for the model's
    own use (last-token pooling, generation) and for the saved folder."""
    pad = getattr(tokenizer, "pad_token_id", None)
    config = getattr(model, "config", None)
    if pad is None or config is None:
        return
    targets = [config]
    text_config = getattr(config, "get_text_config", None)
    if callable(text_config) and text_config() is not config:
        targets.append(text_config())
    for target in targets:
        target.pad_token_id = pad
    generation = getattr(model, "generation_config", None)
    if generation is not None:
        generation.pad_token_id = pad


def _decoder_only(model_type: str) -> bool:
    """Whether models of ``model_type`` are causal (decoder-only) language models."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def enable_gradient_checkpointing(model, name: str) -> None:
    """Recompute activations in the backward pass (non-reentrant: exact, and frozen inputs are fine)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"trainer.gradient_checkpointing: the model {name} ({type(model).__name__}) does not "
                          "support gradient checkpointing")
    kwargs = {"use_reentrant": False}
    enable = getattr(model, "activation_checkpointing_enable", None)  # transformers >= 5.x; the older name warns
    if enable is not None:
        enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # a cache of keys and values is useless in training and clashes with it


def parameter_counts(model) -> dict[str, int]:
    """Trainable and frozen parameters (shared tensors counted once)."""
    trainable = frozen = 0
    for param in model.parameters():  # parameters() yields a tied tensor once
        n = param.numel()
        if type(param).__name__ == "Params4bit":
            n *= 2  # bitsandbytes packs two 4-bit values per element (QLoRA)
        if param.requires_grad:
            trainable += n
        else:
            frozen += n
    return {"trainable": trainable, "frozen": frozen, "total": trainable + frozen}


def describe_counts(counts: dict[str, int]) -> str:
    share = 100 * counts["trainable"] / counts["total"] if counts["total"] else 0.0
    return (f"parameters: {counts['total']:,} in all, {counts['trainable']:,} trainable ({share:.2f}%), "
            f"{counts['frozen']:,} frozen")


def with_head(auto_class, name_or_path: str, head: str, **kwargs):
    """``auto_class.from_pretrained(name_or_path, **kwargs)`` (e.g. ``AutoModelForTokenClassification``),
    or, for a model family that transformers gives no such head, a one-line error naming the
    families that have one (the decoder-only ones, for a decoder-only model)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(name_or_path)
    mapping = auto_class._model_mapping
    if type(config) not in mapping:
        decoder = _decoder_only(config.model_type)
        families = ", ".join(sorted(k for k in mapping._model_mapping if not decoder or _decoder_only(k)))
        raise SFTError(f"{name_or_path}: transformers has no {head} head for {config.model_type} models; "
                       f"{'decoder-only ' if decoder else ''}families with one: {families}")
    return auto_class.from_pretrained(name_or_path, **kwargs)
