"""Text generation servers under concurrent load: `sft serve` with continuous batching and with
static batching, `transformers serve --continuous-batching`, and llama.cpp's server on the same
model exported to GGUF, each started on 127.0.0.1, warmed up, measured and stopped, one at a time.

Systems (``--systems``, default all; sft and transformers with --log-level warning, no access log):
  sft-continuous  python -m sft_core serve --model MODEL --port P
  sft-static      the same with --generation static (batches of model.generate; each stream alone)
  transformers    transformers serve --continuous-batching --cb-num-blocks 64 --device cpu
                  --dtype float32 MODEL (needs fastapi and uvicorn: pip install 'transformers[serving]');
                  its paged KV cache bounded to 64 blocks of 256 tokens, sft serve's default
                  --max-batch-tokens (``--transformers-cache-tokens``): left to size it itself on a
                  CPU, it takes 60% of the machine's memory
  llamacpp        python -m llama_cpp.server --model FILE.gguf --n_threads 2 --n_ctx 2048
                  --interrupt_requests false (without it a new request cuts the stream in flight
                  short); only with --gguf and llama-cpp-python[server] installed, else skipped

Every request is one chat turn from real data, streamed: SQuAD v1.1 dev questions, the first of
each paragraph, from the articles the squad recipes hold out (40 on) first, in the qa task's prompt
with their context paragraph (``--prompt-style question``: the question alone), or the lines of
``--prompts FILE``; the k-th request of a level gets the k-th prompt, for every system. Each level
runs ``--clients`` concurrent clients, each sending its next request as soon as its last one ended,
up to ``--requests-per-client`` x clients requests (at least ``--min-requests``) or
``--seconds-per-level``. Per level: output tokens/s (completion tokens of all answers over the
level's wall time), requests completed, time to first token (the first non-empty content chunk)
p50/p99, inter-token latency p99 (the gaps between content chunks), time per output token p50
(first to last chunk over the tokens after the first), failures by cause, and the server's peak
resident memory (process and children, sampled every 0.2 s). Completion tokens: the usage a server
reports (``stream_options.include_usage``), else the answer's text tokenized by the model's
tokenizer: chunks are no token count, as sft-static streams whole words. The client (aiohttp)
shares the machine with the server: the figures are for both on one machine.

    make bench-serve-generate      # the two steps below: trains the model if missing, then measures
    sft run --config configs/squad-smollm2-instruct.yaml --output-dir runs/squad-smollm2-instruct-serve \\
        trainer.max_steps=30 data.max_eval_samples=32
    python benchmarks/serve_generate.py --model runs/squad-smollm2-instruct-serve/model

llama.cpp as well (optional; `make setup-llamacpp` builds llama-cpp-python, about 5 minutes):

    pip install 'llama-cpp-python[server]'
    sft export --model runs/squad-smollm2-instruct-serve/model --format gguf --quantize q8_0 \\
        --output runs/squad-smollm2-instruct-serve/gguf-q8_0
    python benchmarks/serve_generate.py --model runs/squad-smollm2-instruct-serve/model \\
        --gguf runs/squad-smollm2-instruct-serve/gguf-q8_0
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_load import DATA, SFT, free_port, start  # noqa: E402  (this folder's load test: its server helpers)

SYSTEMS = ("sft-continuous", "sft-static", "transformers", "llamacpp")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model folder of a causal LM (RUN/model)")
    p.add_argument("--gguf", type=Path, help="the model as GGUF for llamacpp: a .gguf file or a folder holding one")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    p.add_argument("--clients", default="1,4,16,64",
                   help="concurrent clients of each level, comma-separated [default: %(default)s]")
    p.add_argument("--max-tokens", type=int, default=128, help="max_tokens of every request [default: %(default)s]")
    p.add_argument("--requests-per-client", type=int, default=2,
                   help="requests per level: this times the clients [default: %(default)s]")
    p.add_argument("--min-requests", type=int, default=4,
                   help="at least this many requests per level [default: %(default)s]")
    p.add_argument("--seconds-per-level", type=float, default=300,
                   help="no new request after this long; those in flight finish [default: %(default)s]")
    p.add_argument("--request-timeout", type=float, default=600,
                   help="seconds before a request counts as timed out [default: %(default)s]")
    p.add_argument("--data-dir", type=Path, default=DATA, help="benchmark data (SQuAD at squad/dev-v1.1.json) "
                   "[default: $SFT_DATA_DIR, else ../shared/data]")
    p.add_argument("--prompt-style", choices=("context", "question"), default="context",
                   help="SQuAD prompts: the qa task's prompt with the context paragraph, or the question alone "
                        "[default: %(default)s]")
    p.add_argument("--prompts", type=Path, help="a text file of prompts, one a line, instead of SQuAD")
    p.add_argument("--transformers-cache-tokens", type=int, default=16384,
                   help="transformers serve's KV cache in tokens, as --cb-num-blocks of 256 (sft serve's default "
                        "--max-batch-tokens); 0: its own sizing, 60%% of the machine's memory on a CPU "
                        "[default: %(default)s]")
    p.add_argument("--llamacpp-threads", type=int, default=2, help="llama.cpp's --n_threads [default: %(default)s]")
    p.add_argument("--output", type=Path, default=Path("bench-results/serve-generate.json"),
                   help="results (JSON); the servers' logs go to a folder beside it [default: %(default)s]")
    args = p.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in args.systems if s not in SYSTEMS]
    if unknown:
        p.error(f"--systems: unknown {', '.join(unknown)} (expected some of {', '.join(SYSTEMS)})")
    try:
        args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        p.error(f"--clients: expected integers separated by commas, got {args.clients!r}")
    if not args.clients or min(args.clients) < 1:
        p.error("--clients: every level needs at least 1 client")
    return args


# --- prompts ---------------------------------------------------------------------------------

def squad_prompts(data_dir: Path, style: str, limit: int = 512) -> list[str]:
    """The first question of each SQuAD dev paragraph, held-out articles (40 on) first."""
    from sft_qa.instruction import InstructionAdapter  # the prompt the squad instruct recipe trains on

    path = data_dir / "squad" / "dev-v1.1.json"
    if not path.is_file():
        sys.exit(f"{path} not found: give --data-dir (or set SFT_DATA_DIR), or --prompts FILE")
    articles = json.loads(path.read_text(encoding="utf-8"))["data"]
    prompts = []
    for article in articles[40:] + articles[:40]:
        for paragraph in article["paragraphs"]:
            question = paragraph["qas"][0]["question"].strip()
            prompts.append(question if style == "question" else
                           InstructionAdapter.prompt.format(context=paragraph["context"], question=question))
    return prompts[:limit]


def file_prompts(path: Path) -> list[str]:
    if not path.is_file():
        sys.exit(f"--prompts: {path} not found")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        sys.exit(f"--prompts: {path} has no prompt (expected one a line)")
    return prompts


# --- one streamed request, one level ---------------------------------------------------------

async def one_request(session, url: str, body: dict) -> dict:
    """Send one streamed chat request; the times of its content chunks, its text, or why it failed."""
    import aiohttp

    started = time.perf_counter()
    times: list[float] = []
    pieces: list[str] = []
    usage, finished = None, False
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body) as response:
            if response.status != 200:
                await response.read()
                return {"error": f"HTTP {response.status}"}
            async for raw in response.content:
                line = raw.strip()
                if not line.startswith(b"data:"):
                    continue  # blank separators, ": ping" comments
                data = line[5:].strip()
                if data == b"[DONE]":
                    finished = True
                    break
                event = json.loads(data)
                if "error" in event:
                    return {"error": "error event in the stream"}
                if event.get("usage"):
                    usage = event["usage"].get("completion_tokens")
                for choice in event.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        times.append(time.perf_counter())
                        pieces.append(piece)
                    finished = finished or bool(choice.get("finish_reason"))
    except asyncio.TimeoutError:
        return {"error": "timeout"}
    except aiohttp.ClientError as exc:
        return {"error": f"connection error ({type(exc).__name__})"}
    except (ValueError, UnicodeDecodeError):
        return {"error": "malformed event"}
    if not finished:
        return {"error": "stream ended without a finish"}
    return {"ttft": times[0] - started if times else None, "gaps": [b - a for a, b in zip(times, times[1:])],
            "span": times[-1] - times[0] if times else 0.0, "chunks": len(times), "usage_tokens": usage,
            "text": "".join(pieces)}


async def run_level(url: str, body_for, prompts: list[str], clients: int, requests: int, seconds: float,
                    timeout: float) -> tuple[list[dict], float]:
    """``clients`` concurrent clients, each sending its next request when its last one ended."""
    import aiohttp

    results: list[dict] = []
    sent = 0
    stop_at = time.perf_counter() + seconds

    async def client(session) -> None:
        nonlocal sent
        while sent < requests and time.perf_counter() < stop_at:
            prompt = prompts[sent % len(prompts)]
            sent += 1
            results.append(await one_request(session, url, body_for(prompt)))

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        return results, time.perf_counter() - started


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (``p`` in 0-100) of ``values``, in milliseconds; None for none."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))] * 1000, 1)


def summarize(results: list[dict], wall: float, count_tokens) -> dict:
    done = [r for r in results if "error" not in r]
    sources: Counter = Counter()
    for r in done:
        if r["usage_tokens"] is not None:
            r["tokens"] = r["usage_tokens"]
            sources["usage"] += 1
        else:
            r["tokens"], source = count_tokens(r["text"], r["chunks"])
            sources[source] += 1
    tokens = sum(r["tokens"] for r in done)
    return {"requests": len(results), "completed": len(done),
            "failures": dict(Counter(r["error"] for r in results if "error" in r)),
            "completion_tokens": tokens, "chunks": sum(r["chunks"] for r in done), "token_counts_from": dict(sources),
            "tokens_per_request": round(tokens / len(done), 1) if done else 0,
            "wall_seconds": round(wall, 2), "tokens_per_second": round(tokens / wall, 2) if wall else 0.0,
            "ttft_p50_ms": percentile([r["ttft"] for r in done if r["ttft"] is not None], 50),
            "ttft_p99_ms": percentile([r["ttft"] for r in done if r["ttft"] is not None], 99),
            "itl_p99_ms": percentile([g for r in done for g in r["gaps"]], 99),
            "tpot_p50_ms": percentile([r["span"] / (r["tokens"] - 1) for r in done
                                       if r["tokens"] > 1 and r["chunks"] > 1], 50)}


# --- servers ---------------------------------------------------------------------------------

class PeakMemory:
    """Resident memory of a process and its children, sampled on a thread: the peak overall and
    since the last ``reset``, in MB."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak = self.level_peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def sample(self) -> float:
        try:
            import psutil
        except ImportError:  # the process alone, from /proc (Linux)
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return 0.0
            return next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)
        try:
            process = psutil.Process(self.pid)
            tree = [process, *process.children(recursive=True)]
        except psutil.Error:
            return 0.0
        total = 0
        for member in tree:
            try:
                total += member.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def take(self) -> float:
        """Sample now; the peak since the last ``reset``."""
        mb = self.sample()
        self.peak, self.level_peak = max(self.peak, mb), max(self.level_peak, mb)
        return self.level_peak

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.take()

    def reset(self) -> None:
        self.level_peak = 0.0
        self.take()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_polling(command: list[str], url: str, log: Path, seconds: float = 300) -> subprocess.Popen:
    """Start a server without /health (llama.cpp's) and wait until ``url`` answers 200."""
    import httpx

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + seconds
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {' '.join(command)}; see {log}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(process)
    raise RuntimeError(f"server did not start in {seconds:.0f} s: {' '.join(command)}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, a minute to exit (sft serve drains), then SIGKILL; children left behind too."""
    try:
        import psutil
        children = psutil.Process(process.pid).children(recursive=True)
    except Exception:  # psutil missing, or the process is gone
        children = []
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    for child in children:
        try:
            child.kill()
        except Exception:
            pass


def gguf_file(path: Path | None) -> Path | None:
    if path is None or path.is_file():
        return path
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    return found[0] if len(found) == 1 else None


def unavailable(system: str, args) -> str | None:
    """Why ``system`` cannot run here, or None."""
    if system == "transformers":
        missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not installed (pip install 'transformers[serving]')"
        if transformers_cli() is None:
            return "no transformers command beside this Python or on PATH"
    if system == "llamacpp":
        if args.gguf is None:
            return "no --gguf given (sft export --model RUN/model --format gguf --quantize q8_0 --output DIR)"
        if gguf_file(args.gguf) is None:
            return f"--gguf {args.gguf}: not a .gguf file nor a folder holding exactly one"
        missing = [m for m in ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings")
                   if importlib.util.find_spec(m) is None]
        if missing:
            return f"{', '.join(missing)} not installed (pip install 'llama-cpp-python[server]')"
    return None


def transformers_cli() -> str | None:
    beside = Path(sys.executable).parent / "transformers"
    return str(beside) if beside.is_file() else shutil.which("transformers")


def command_for(system: str, args, port: int) -> tuple[list[str], str]:
    """The server's command line, and the model name its requests carry."""
    model = str(args.model)
    if system in ("sft-continuous", "sft-static"):
        static = ["--generation", "static"] if system == "sft-static" else []
        return [*SFT, "serve", "--model", model, "--port", str(port), *static, "--log-level", "warning"], model
    if system == "transformers":
        model = str(args.model.resolve())  # served on demand by this name; given on the command line, preloaded
        tokens = args.transformers_cache_tokens
        blocks = ["--cb-num-blocks", str(-(-tokens // 256))] if tokens else []  # blocks of 256 tokens, its default
        return [transformers_cli(), "serve", "--continuous-batching", *blocks, "--host", "127.0.0.1", "--port",
                str(port), "--device", "cpu", "--dtype", "float32", "--log-level", "warning", model], model
    gguf = str(gguf_file(args.gguf))
    return [sys.executable, "-m", "llama_cpp.server", "--model", gguf, "--host", "127.0.0.1", "--port", str(port),
            "--n_threads", str(args.llamacpp_threads), "--n_ctx", "2048", "--interrupt_requests", "false"], gguf


def measure(system: str, args, prompts: list[str], count_tokens, logs: Path) -> dict:
    port = free_port()
    command, model_name = command_for(system, args, port)
    url = f"http://127.0.0.1:{port}"
    record: dict = {"command": command}
    print(f"\n# {system}: {' '.join(command)}", flush=True)

    def body_for(prompt: str) -> dict:
        return {"model": model_name, "messages": [{"role": "user", "content": prompt}], "max_tokens": args.max_tokens,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}

    log = logs / f"{system}.log"
    started = time.perf_counter()
    try:
        process = (start_polling(command, f"{url}/v1/models", log) if system == "llamacpp"
                   else start(command, port, log))
    except RuntimeError as exc:
        return {**record, "error": str(exc), "log_tail": tail(log)}
    record["startup_seconds"] = round(time.perf_counter() - started, 1)
    memory = PeakMemory(process.pid)
    try:
        warm, _ = asyncio.run(run_level(url, body_for, prompts, 1, 1, args.request_timeout, args.request_timeout))
        if "error" in warm[0]:
            return {**record, "error": f"warm-up request failed: {warm[0]['error']}", "log_tail": tail(log)}
        record["levels"] = []
        for clients in args.clients:
            memory.reset()
            requests = max(args.min_requests, args.requests_per_client * clients)
            results, wall = asyncio.run(run_level(url, body_for, prompts, clients, requests, args.seconds_per_level,
                                                  args.request_timeout))
            row = {"clients": clients, "planned": requests, **summarize(results, wall, count_tokens),
                   "peak_rss_mb": round(memory.take(), 1)}
            record["levels"].append(row)
            print(json.dumps({"system": system, **row}), flush=True)
            if process.poll() is not None:
                record["error"] = f"server exited with {process.returncode} during {clients} clients"
                record["log_tail"] = tail(log)
                break
        memory.take()
        record["peak_rss_mb"] = round(memory.peak, 1)
        return record
    finally:
        memory.stop()
        stop(process)


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- the report ------------------------------------------------------------------------------

def token_counter(model: Path):
    """(text, chunks) -> (completion tokens, where the count came from): the model's tokenizer on the
    text, else the number of chunks."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model))
    except Exception as exc:  # the count falls back to chunks; the report says so
        print(f"warning: no tokenizer in {model} ({type(exc).__name__}): tokens counted as chunks", file=sys.stderr)
        return lambda text, chunks: (chunks, "chunks")
    return lambda text, chunks: (len(tokenizer(text, add_special_tokens=False)["input_ids"]), "tokenizer")


def machine() -> dict:
    import torch
    import transformers

    llama = importlib.util.find_spec("llama_cpp") and __import__("llama_cpp").__version__
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "llama_cpp": llama or None}


def ms(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def print_table(results: dict) -> None:
    print("\n| system | clients | done / sent | tokens/s | tokens/request | TTFT p50 / p99 ms | ITL p99 ms "
          "| TPOT p50 ms | failures | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for system, record in results["systems"].items():
        for r in record.get("levels", []):
            failures = ", ".join(f"{n} {why}" for why, n in r["failures"].items()) or "0"
            print(f"| {system} | {r['clients']} | {r['completed']} / {r['requests']} | {r['tokens_per_second']:.1f} "
                  f"| {r['tokens_per_request']} | {ms(r['ttft_p50_ms'])} / {ms(r['ttft_p99_ms'])} "
                  f"| {ms(r['itl_p99_ms'])} | {ms(r['tpot_p50_ms'])} | {failures} | {r['peak_rss_mb']:.0f} |")
    for system, record in results["systems"].items():
        if "skipped" in record:
            print(f"- {system}: skipped: {record['skipped']}")
        elif "error" in record:
            print(f"- {system}: failed: {record['error']}")


def main(argv=None) -> None:
    args = parse_args(argv)
    if not (args.model / "config.json").is_file():
        sys.exit(f"--model {args.model}: no config.json; give a causal LM folder such as RUN/model of `sft run`")
    prompts = file_prompts(args.prompts) if args.prompts else squad_prompts(args.data_dir, args.prompt_style)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    logs = args.output.parent / f"{args.output.stem}-logs"
    logs.mkdir(exist_ok=True)
    results = {"machine": machine(), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "prompts": {"count": len(prompts), "source": str(args.prompts) if args.prompts else
                           f"SQuAD v1.1 dev, {args.prompt_style}",
                           "mean_characters": round(statistics.mean(len(p) for p in prompts))},
               "systems": {}}
    print(f"machine: {json.dumps(results['machine'])}")
    print(f"prompts: {json.dumps(results['prompts'])}", flush=True)
    count_tokens = token_counter(args.model)
    for system in args.systems:
        why = unavailable(system, args)
        if why:
            print(f"\n# {system}: skipped: {why}", flush=True)
            results["systems"][system] = {"skipped": why}
        else:
            results["systems"][system] = measure(system, args, prompts, count_tokens, logs)
            if "error" in results["systems"][system]:
                print(f"{system} failed: {results['systems'][system]['error']}", flush=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")  # what is done so far survives an interrupt
    print("\ncommands:")
    for system, record in results["systems"].items():
        if "command" in record:
            print(f"  {system}: {' '.join(record['command'])}")
    print_table(results)
    print(f"\nresults: {args.output}; server logs: {logs}")


if __name__ == "__main__":
    main()
