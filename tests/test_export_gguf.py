"""``sft export --format gguf`` on tiny random decoders: transformers reads the file back with the same
top tokens, the tokenizer and template metadata round-trip, the Modelfile renders as the chat
template, the refusals, and nothing is written when a check fails. llama.cpp's own check runs in the
slow tier (it needs llama-cpp-python, built from source)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sft_core.engine.export import gguf as gguf_export  # noqa: E402
from sft_core.engine.export import ollama  # noqa: E402
from sft_core.errors import SFTError  # noqa: E402
from sft_core.host.manager import PluginHost  # noqa: E402
from sft_core.testing import tiny_bert, tiny_decoder  # noqa: E402

from helpers import invoke, sft  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "plugins" / "sft_instruct" / "sample_data"
WORDS = "the cat dog sat ran on a mat red blue green what is capital of colour answer yes no".split()


def corpus() -> list[str]:
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(200)]
    samples = [m["content"] for name in ("train.jsonl", "eval.jsonl")
               for line in (SAMPLE / name).read_text().splitlines() for m in json.loads(line)["messages"]]
    return [*texts, *samples, "system user assistant ### : You answer briefly. What is 12 + 30? café"]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory) -> Path:
    """A tiny Llama fine-tuned a few steps by `sft run --task instruct` with the ChatML template (added tokens)."""
    root = tmp_path_factory.mktemp("gguf-run")
    model = tiny_decoder(root / "llama", corpus(), family="llama", pad="eos", hidden=64)
    sft("run", "--task", "instruct", "--model", model, "--output-dir", root / "run", "instruct.chat_template=chatml",
        "trainer.max_steps=4", "trainer.lr=1e-3", "peft.method=none", check=True)
    return root / "run" / "model"


@pytest.fixture(scope="module")
def f16(chat_run, tmp_path_factory) -> tuple[Path, dict]:
    """The run's model exported at f16 through the console script, as a user does."""
    out = tmp_path_factory.mktemp("gguf-f16") / "exported"
    done = sft("export", "--model", chat_run, "--format", "gguf", "--output", out, "--no-llama-cpp", check=True)
    assert "transformers read it back" in done.stderr
    return out, json.loads(done.stdout)


def gguf_file(folder: Path) -> Path:
    files = list(folder.glob("*.gguf"))
    assert len(files) == 1, files
    return files[0]


def test_f16_reloads_through_transformers_with_every_top_token_equal(chat_run, f16):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, report = f16
    check = report["verification"]
    assert check["top_token_agreement"] == 1.0 and check["next_token_agreement"] == 1.0
    assert check["positions"] > 50 and 0 < check["max_abs_logit_diff"] < 1e-2
    # independently of the report: transformers' own reader against the PyTorch model, on new text
    path = gguf_file(out)
    reread = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=path.name, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(str(chat_run), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(chat_run))
    ids = torch.tensor([tokenizer("the red dog sat on a blue mat what is the capital")["input_ids"]])
    with torch.inference_mode():
        a, b = original(input_ids=ids).logits, reread(input_ids=ids).logits
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    assert (a - b).abs().max() < 1e-2
    assert report["tensors"]["f16"] > 0 and report["tensors"]["f32"] > 0  # matrices f16, norms f32


def test_folder_holds_the_file_the_modelfile_and_the_report(f16):
    out, report = f16
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([report["file"], "Modelfile", "sft_task.json"])
    info = json.loads((out / "sft_task.json").read_text())
    assert info["task"] == "instruct" and info["export"]["format"] == "gguf"
    assert info["export"]["verification"]["template"]["identical_ids"] is True
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no work folder left behind


def test_tokenizer_and_template_metadata_round_trip(chat_run, f16):
    from transformers import AutoTokenizer

    out, report = f16
    tokenizer = AutoTokenizer.from_pretrained(str(chat_run))
    reader = gguf.GGUFReader(str(gguf_file(out)))
    field = lambda key: reader.fields[key].contents()  # noqa: E731
    vocab = {i: t for t, i in tokenizer.get_vocab().items()}
    assert field("tokenizer.ggml.tokens") == [vocab[i] for i in range(len(vocab))]
    types = field("tokenizer.ggml.token_type")
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert types[end] == gguf.TokenType.CONTROL and types[5] == gguf.TokenType.NORMAL
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    assert field("tokenizer.ggml.merges") == [m if isinstance(m, str) else " ".join(m) for m in merges]
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert field("tokenizer.ggml.eot_token_id") == end  # ChatML's end of turn, not the EOS
    assert field("tokenizer.ggml.add_bos_token") is False  # the template writes what it needs
    assert field("general.architecture") == "llama" and field("llama.block_count") == 2
    assert field("llama.attention.head_count") == 4 and field("llama.attention.head_count_kv") == 2
    assert report["tokenizer"]["eot_id"] == end


def test_query_and_key_weights_are_in_llama_cpp_rotary_layout(chat_run, f16):
    """llama.cpp pairs rotary dimensions (2i, 2i+1); Hugging Face Llama pairs (i, i + d/2): rows move."""
    from gguf.quants import dequantize
    from transformers import AutoModelForCausalLM

    out, _ = f16
    model = AutoModelForCausalLM.from_pretrained(str(chat_run), dtype=torch.float32)
    tensors = {t.name: t for t in gguf.GGUFReader(str(gguf_file(out))).tensors}
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    stored = dequantize(tensors["blk.0.attn_q.weight"].data, tensors["blk.0.attn_q.weight"].tensor_type)
    heads, head_dim = 4, q.shape[0] // 4
    expected = q.reshape(heads, 2, head_dim // 2, -1).swapaxes(1, 2).reshape(q.shape)
    assert np.abs(stored - expected).max() < 1e-3
    assert np.abs(stored - q).max() > 1e-2  # the permutation is not the identity


def test_modelfile_template_renders_conversations_as_the_chat_template(chat_run, f16):
    from transformers import AutoTokenizer

    out, report = f16
    text = (out / "Modelfile").read_text()
    assert f"FROM ./{report['file']}" in text and 'PARAMETER stop "<|im_end|>"' in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    tokenizer = AutoTokenizer.from_pretrained(str(chat_run))
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "the cat?"},
                    {"role": "assistant", "content": "sat on\na mat"}, {"role": "user", "content": "red or blue?"}]
    for messages in (conversation, conversation[1:], conversation[:3]):
        want = tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=messages[-1]["role"] != "assistant")
        assert ollama.render_go_template(template, messages) == want
    assert report["modelfile"]["conversations_checked"] > 0


def test_q8_0_agreement_is_reported_and_above_its_threshold(chat_run, f16, tmp_path):
    result = invoke("export", "--model", chat_run, "--format", "gguf", "--quantize", "q8_0", "--output",
                    tmp_path / "q8", "--no-llama-cpp")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # measured on this tiny model: 1.0 at every position; a wrong layout or scale gives far less
    assert report["verification"]["top_token_agreement"] >= 0.97
    assert report["verification"]["min_agreement"] == 0.9
    assert report["tensors"]["q8_0"] > 0
    assert gguf_file(tmp_path / "q8").stat().st_size < 0.7 * gguf_file(f16[0]).stat().st_size


def test_below_the_agreement_threshold_nothing_is_written(chat_run, tmp_path):
    out = tmp_path / "q4"
    result = invoke("export", "--model", chat_run, "--format", "gguf", "--quantize", "q4_0", "--output", out,
                    "--min-agreement", "1", "--no-llama-cpp")
    assert result.exit_code != 0
    assert "below --min-agreement 1; nothing was written" in result.output
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_file_that_would_add_bos_twice_is_refused(chat_run, tmp_path, monkeypatch):
    """A GGUF that says 'add BOS' for a model trained without one (the double-BOS files users report)."""
    monkeypatch.setattr(gguf_export, "adds_bos", lambda tokenizer: True)
    with pytest.raises(SFTError, match="other ids than the model was trained on, from token 0"):
        gguf_export.export_gguf(str(chat_run), str(tmp_path / "out"), PluginHost(), llama_cpp=False,
                                echo=lambda line: None)
    assert not list(tmp_path.iterdir())


def test_qwen2_folder_with_biases_exports_without_a_chat_template(tmp_path):
    model = tiny_decoder(tmp_path / "qwen", corpus(), family="qwen2", pad="eos", hidden=64)
    report = gguf_export.export_gguf(model, str(tmp_path / "out"), PluginHost(), llama_cpp=False,
                                     echo=lambda line: None)
    assert report["architecture"] == "qwen2" and report["verification"]["top_token_agreement"] == 1.0
    names = {t.name for t in gguf.GGUFReader(str(gguf_file(tmp_path / "out"))).tensors}
    assert "blk.0.attn_q.bias" in names
    assert report["modelfile"]["template"] is None and "no chat template" in (tmp_path / "out" / "Modelfile").read_text()


#: A template that writes BOS itself, as Llama 3's does (with its tokenizer adding BOS to plain text too).
BOS_TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ '### ' + m['role'] + ':\n' + m['content'] | trim }}"
                "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}{{ '### assistant:\n' }}{% endif %}")


def test_a_template_that_writes_bos_gets_no_second_one(tmp_path):
    """The tokenizer adds BOS to plain text and the template writes it too: the file must tell llama.cpp
    not to add it, so that a rendered conversation starts with one BOS, as in training."""
    from tokenizers import processors
    from transformers import AutoTokenizer

    folder = tiny_decoder(tmp_path / "m", corpus(), family="llama", pad="eos", hidden=64)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    bos = tokenizer.bos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
    tokenizer.chat_template = BOS_TEMPLATE
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder)("the cat")["input_ids"][0] == bos
    report = gguf_export.export_gguf(folder, str(tmp_path / "out"), PluginHost(), llama_cpp=False,
                                     echo=lambda line: None)
    assert report["tokenizer"]["add_bos"] is False
    template = report["verification"]["template"]
    assert template["identical_ids"] and template["checked"] >= 2 and template["add_bos"] is False
    assert report["modelfile"]["trims_content"] and "strips whitespace" in (tmp_path / "out" / "Modelfile").read_text()


@pytest.mark.parametrize("family, message", [("gpt2", "exports GGUF for the Llama"), ("bert", "--format onnx")])
def test_unsupported_models_get_one_line(tmp_path, family, message):
    if family == "bert":
        model = tiny_bert(tmp_path / "m", corpus())
    else:
        model = tiny_decoder(tmp_path / "m", corpus(), family=family, pad="eos")
    result = invoke("export", "--model", model, "--format", "gguf")
    assert result.exit_code != 0 and message in result.output
    assert "Traceback" not in result.output


def test_option_mistakes_are_named(chat_run, f16):
    result = invoke("export", "--model", chat_run, "--format", "gguf", "--quantize", "int8")
    assert result.exit_code == 2 and "int8 is an ONNX quantization" in result.output
    result = invoke("export", "--model", chat_run, "--quantize", "q8_0")
    assert result.exit_code == 2 and "add --format gguf" in result.output
    result = invoke("export", "--model", chat_run, "--format", "gguf", "--output", f16[0])
    assert result.exit_code != 0 and "exists and is not empty" in result.output


def test_sft_commands_point_from_the_export_to_the_model_folder(f16):
    result = invoke("eval", "--model", f16[0])
    assert result.exit_code != 0 and "is a GGUF export, run by llama.cpp or Ollama" in result.output


@pytest.mark.slow
def test_llama_cpp_loads_the_file_and_continues_as_transformers(chat_run, tmp_path):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (make setup-llamacpp)")
    result = invoke("export", "--model", chat_run, "--format", "gguf", "--output", tmp_path / "out", "--llama-cpp")
    assert result.exit_code == 0, result.output
    check = json.loads(result.stdout)["llama_cpp"]
    assert check["loaded"] and check["conversations_tokenized_identically"] > 0
    assert check["identical_continuations"] == check["prompts"]


def test_the_python_api_exports_as_the_command(chat_run, f16, tmp_path):
    import shutil

    import sft_core

    model = tmp_path / "run" / "model"
    shutil.copytree(chat_run, model)
    report = sft_core.export(str(model), format="gguf", llama_cpp=False, echo=lambda line: None)
    assert report["output"] == str(tmp_path / "run" / "gguf-f16")  # beside the model, as the command writes
    assert (tmp_path / "run" / "gguf-f16" / report["file"]).is_file()
    cli = f16[1]["verification"]
    assert report["verification"]["max_abs_logit_diff"] == cli["max_abs_logit_diff"]
    assert report["verification"]["positions"] == cli["positions"]
    with pytest.raises(SFTError, match="int8 is an ONNX quantization"):
        sft_core.export(str(model), format="gguf", quantize="int8")
