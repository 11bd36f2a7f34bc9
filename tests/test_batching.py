"""Batches and features: deterministic, length-grouped, sharded without loss, tokenized once."""

from __future__ import annotations

import random

from sft_core.engine.batching import build_features, eval_batches, shard_train_batches, train_batches
from sft_core.host.manager import PluginHost

from helpers import SAMPLE, make_config


def test_train_batches_cover_each_feature_once_and_are_deterministic():
    lengths = [random.Random(i).randint(1, 60) for i in range(1000)]
    batches = train_batches(lengths, 32, seed=7, epoch=3, group_by_length=True)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == train_batches(lengths, 32, seed=7, epoch=3, group_by_length=True)
    assert batches != train_batches(lengths, 32, seed=7, epoch=4, group_by_length=True)


def test_length_grouping_reduces_padding():
    lengths = [random.Random(i).randint(1, 100) for i in range(3200)]

    def padded(batches):
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    grouped = padded(train_batches(lengths, 32, 0, 0, group_by_length=True))
    plain = padded(train_batches(lengths, 32, 0, 0, group_by_length=False))
    assert grouped < 0.7 * plain


def test_sharding_pads_by_wrapping_so_every_process_steps_alike():
    batches = [[i] for i in range(5)]
    groups = shard_train_batches(batches, world=2)
    assert groups == [[[0], [1]], [[2], [3]], [[4], [0]]]
    assert shard_train_batches(batches, world=1) == [[b] for b in batches]


def test_eval_batches_split_features_between_processes_exactly_once():
    lengths = [random.Random(i).randint(1, 50) for i in range(101)]
    seen = [i for rank in range(3) for b in eval_batches(lengths, 8, rank, 3) for i in b]
    assert sorted(seen) == list(range(101))


def test_features_are_tokenized_once_then_read_from_the_cache(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("SFT_CACHE_DIR", str(tmp_path))
    host = PluginHost()
    config = make_config(host, model=tiny_model)
    task = host.get_task("classification").factory(config)
    examples = task.load("train", str(SAMPLE / "train.jsonl"))
    task.setup(examples)
    tokenizer = task.load_tokenizer(tiny_model)

    calls = []
    original = task.preprocess
    task.preprocess = lambda batch: calls.append(len(batch["text"])) or original(batch)
    first = build_features(task, config, tokenizer, examples, "train")
    assert sum(calls) == len(examples)
    second = build_features(task, config, tokenizer, examples, "train")
    assert sum(calls) == len(examples), "the second call tokenized again"
    assert first["input_ids"] == second["input_ids"]
    # a different max_length is a different cache entry
    config.trainer.max_length = 8
    third = build_features(task, config, tokenizer, examples, "train")
    assert sum(calls) == 2 * len(examples)
    assert max(len(ids) for ids in third["input_ids"]) == 8
