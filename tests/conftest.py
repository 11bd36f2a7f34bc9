"""Shared fixtures: offline settings, a private feature cache, the plugin host, a tiny random BERT built
in-process; and, under SFT_STRICT_SKIPS=1 (CI), a skip outside a short allowlist fails its test."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TQDM_DISABLE", "1")

#: The plugins the suite sees: the built-in tasks (the entry points of the distribution sft-core) and
#: none of the third-party plugins that may be installed next to sft, whatever the shell sets, so an
#: installed plugin cannot change what a test sees. Set here, before any test or subprocess starts, so
#: session fixtures and every ``sft`` the tests start inherit it; a test wanting another plugin asks for
#: it with the ``load_plugins`` fixture (or ``plugins_env`` for a subprocess).
BUILTIN_PLUGINS = "sft-core"
os.environ["SFT_LOAD_PLUGINS"] = BUILTIN_PLUGINS
os.environ.pop("SFT_DISABLE_PLUGINS", None)

from pathlib import Path

import pytest

pytest_plugins = ["figures"]  # the real-data tier's figures, printed at the end of the run

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
SAMPLE = ROOT / "plugins" / "sft_classification" / "sample_data"


@pytest.fixture(autouse=True)
def _feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SFT_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "sft-cache"))


@pytest.fixture(autouse=True)
def _builtin_plugins_only(monkeypatch):
    """Each test starts with the built-in plugins only, even after a test that set the variables itself."""
    monkeypatch.setenv("SFT_LOAD_PLUGINS", BUILTIN_PLUGINS)
    monkeypatch.delenv("SFT_DISABLE_PLUGINS", raising=False)


@pytest.fixture(scope="module")
def host():
    """A plugin host with the built-in tasks, one per test module."""
    from sft_core.host.manager import PluginHost

    return PluginHost()


def plugins_env(*names: str, **extra: str) -> dict[str, str]:
    """The environment for a subprocess that also loads ``names`` (entry-point or distribution names)."""
    return {**os.environ, "SFT_LOAD_PLUGINS": ",".join((BUILTIN_PLUGINS, *names)), **extra}


@pytest.fixture
def load_plugins(monkeypatch):
    """``load_plugins("rival")``: this test (and the subprocesses it starts) also loads these plugins."""
    def load(*names: str) -> None:
        monkeypatch.setenv("SFT_LOAD_PLUGINS", ",".join((BUILTIN_PLUGINS, *names)))

    return load


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """A tiny random Llama (pad = EOS, as SmolLM2) whose tokenizer knows the words of the test conversations."""
    import random

    from sft_core.testing import tiny_decoder

    words = "the cat dog sat ran on a mat red blue green what is capital of colour answer yes no".split()
    rng = random.Random(0)
    texts = [" ".join(rng.choice(words) for _ in range(8)) for _ in range(200)]
    return tiny_decoder(tmp_path_factory.mktemp("tiny-llama"), [*texts, "system user assistant ### :"],
                        family="llama", pad="eos")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random BERT (``sft_core.testing.tiny_bert``) whose tokenizer was trained on the classification sample."""
    import json

    from sft_core.testing import tiny_bert

    texts = [json.loads(line)["sentence"] for name in ("train.jsonl", "eval.jsonl")
             for line in (SAMPLE / name).read_text().splitlines()]
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


# --- skips that cannot hide -------------------------------------------------------------------

#: The skips CI accepts under SFT_STRICT_SKIPS=1: a skip whose reason contains one of these strings.
#: Only tests that need a GPU, on a machine without one; anything else skipped there (a missing
#: package of the ``dev`` extra, a missing tool, absent data) is a failure of that test, not a skip.
ALLOWED_SKIPS = ("GPU",)


def _strict_skips() -> bool:
    return os.environ.get("SFT_STRICT_SKIPS") == "1"


def _skip_reason(longrepr) -> str:
    """The reason of a skip report (its ``longrepr`` is ``(path, line, "Skipped: reason")``)."""
    message = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return message.removeprefix("Skipped: ")


def _refuse_skip(report) -> None:
    """Turn a skip report whose reason is not allowed into a failure that names the reason."""
    if not (_strict_skips() and report.skipped) or hasattr(report, "wasxfail"):  # an xfail is not a skip
        return
    reason = _skip_reason(report.longrepr)
    if any(allowed in reason for allowed in ALLOWED_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped in CI: {reason} (SFT_STRICT_SKIPS=1; allowed only: "
                       f"{', '.join(repr(a) for a in ALLOWED_SKIPS)})")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    _refuse_skip(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    """A module skipped as a whole when collected (``pytest.importorskip`` at its top) counts too."""
    report = yield
    _refuse_skip(report)
    return report
