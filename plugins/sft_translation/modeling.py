"""Models and tokenizers for translation: a Marian-style model built from config, with a BPE
tokenizer trained on the training data, or any seq2seq checkpoint, or an encoder warm-started
into an encoder-decoder."""

from __future__ import annotations

import sys

#: Special tokens of the tokenizer trained from scratch, in id order.
PAD, EOS, UNK = "<pad>", "</s>", "<unk>"

#: T5 task prefixes name the languages.
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "ro": "Romanian"}


def train_tokenizer(texts: list[str], vocab_size: int, max_length: int):
    """A cased BPE tokenizer (NFKC, no accent stripping) shared by source and target; ends with </s>."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[PAD, EOS, UNK],
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    eos = tok.token_to_id(EOS)
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}",
                                                       special_tokens=[(EOS, eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=max_length)


def scratch_model(options, tokenizer):
    """A Marian-style encoder-decoder with shared, tied embeddings and sinusoidal positions."""
    from transformers import MarianConfig, MarianMTModel

    config = MarianConfig(
        vocab_size=len(tokenizer), decoder_vocab_size=len(tokenizer), d_model=options.d_model,
        encoder_layers=options.encoder_layers, decoder_layers=options.decoder_layers,
        encoder_attention_heads=options.attention_heads, decoder_attention_heads=options.attention_heads,
        encoder_ffn_dim=options.ffn_dim, decoder_ffn_dim=options.ffn_dim, dropout=options.dropout,
        attention_dropout=options.dropout, activation_dropout=0.0, activation_function="relu",
        max_position_embeddings=1024, scale_embedding=True, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id, forced_eos_token_id=tokenizer.eos_token_id,
    )
    return MarianMTModel(config)


def pretrained_model(path: str, tokenizer):
    """A seq2seq checkpoint as it is, or an encoder checkpoint warm-starting both halves of an encoder-decoder."""
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, EncoderDecoderModel

    config = AutoConfig.from_pretrained(path)
    if config.is_encoder_decoder:
        return AutoModelForSeq2SeqLM.from_pretrained(path)
    print(f"note: {path} is an encoder ({config.model_type}); warm-starting an encoder-decoder from it "
          "(the decoder's cross-attention starts untrained)", file=sys.stderr)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(path, path)
    start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    for cfg in (model.config, model.generation_config):
        cfg.decoder_start_token_id = start
        cfg.pad_token_id = tokenizer.pad_token_id
        cfg.eos_token_id = eos
    model.config.vocab_size = model.config.decoder.vocab_size
    return model


def max_positions(config) -> int | None:
    """The longest sequence the decoder can take, when it has a limit (T5 has none)."""
    if getattr(config, "is_encoder_decoder", False) and hasattr(config, "decoder") and hasattr(config.decoder, "max_position_embeddings"):
        return config.decoder.max_position_embeddings
    return getattr(config, "max_position_embeddings", None)
