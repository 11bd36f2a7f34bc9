"""Load test of `sft serve` against a hand-written FastAPI + transformers pipeline server, in one run.

For each model (SST-2 classification and CoNLL-2003 NER, MiniLM fine-tuned by `sft run`) and each
server (`sft serve` on PyTorch, on ONNX fp32 and on ONNX int8 exported by `sft export`, and the
baseline of benchmarks/baseline_server.py), it starts the server on 127.0.0.1, warms it up, then
runs 1, 8, 32 and 128 concurrent clients (httpx, asynchronous), each sending one input per request
and its next request as soon as the answer arrives, and prints requests/s, p50/p95/p99 latency and
failed requests (aiohttp's client, light enough not to take the CPU the servers need). Inputs are real sentences of the development sets. The number of requests per
level and the time per level are bounded. It also measures SST-2 dev accuracy of PyTorch and int8.

    sft run --config configs/sst2.yaml && sft run --config configs/conll2003-4k.yaml
    python benchmarks/serve_load.py --sst2 runs/sst2/model --conll runs/conll2003-4k/model

Client and server share this machine's cores: the figures are for both on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SFT_DATA_DIR") or ROOT.parent / "shared" / "data")
LEVELS = (1, 8, 32, 128)
SFT = [sys.executable, "-m", "sft_core"]  # the sft of this Python, wherever PATH points


def sst2_sentences(limit: int | None = None) -> list[str]:
    lines = (DATA / "glue" / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [line.split("\t")[0] for line in lines][:limit]


def conll_sentences(limit: int | None = None) -> list[str]:
    sentences, words = [], []
    for line in (DATA / "conll2003" / "eng.testa").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("-DOCSTART-"):
            if words:
                sentences.append(" ".join(words))
            words = []
        else:
            words.append(line.split()[0])
    return sentences[:limit]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(command: list[str], port: int, log: Path) -> subprocess.Popen:
    import httpx

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 180
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {' '.join(command)}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1)
                if ready.status_code in (200, 404):  # the baseline has no /ready: its model loads before it listens
                    return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"server did not start: {' '.join(command)}")


async def level(url: str, texts: list[str], clients: int, requests: int, seconds: float) -> dict:
    """``clients`` concurrent clients, each sending its next request when the last is answered."""
    import aiohttp

    latencies: list[float] = []
    failed = 0
    errors: dict[str, int] = {}
    sent = 0
    stop_at = time.perf_counter() + seconds

    async def client(worker: int, session) -> None:
        nonlocal sent, failed
        while sent < requests and time.perf_counter() < stop_at:
            text = texts[(sent * 7 + worker) % len(texts)]
            sent += 1
            started = time.perf_counter()
            try:
                async with session.post(f"{url}/predict", json={"inputs": [text]}) as response:
                    body = await response.json(content_type=None)
                    ok = response.status == 200 and len(body["predictions"]) == 1
                    why = f"status {response.status}"
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError) as exc:
                ok, why = False, type(exc).__name__
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failed += 1
                errors[why] = errors.get(why, 0) + 1

    # aiohttp rather than httpx: at 128 connections httpx's client alone took a CPU core here,
    # which on a 2-core machine measures the client instead of the server
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, session) for i in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {"clients": clients, "requests": len(latencies) + failed, "failed": failed,
            "rps": round(len(latencies) / wall, 1), "p50_ms": round(pct(0.50), 1), "p95_ms": round(pct(0.95), 1),
            "p99_ms": round(pct(0.99), 1), "mean_ms": round(statistics.mean(latencies) * 1000, 1) if latencies else None,
            **({"errors": errors} if errors else {})}


def measure(name: str, command: list[str], port: int, texts: list[str], args, logs: Path) -> list[dict]:
    process = start(command, port, logs / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(level(url, texts, 4, 40, 60))  # warm-up
        rows = []
        for clients in args.levels:
            requests = max(args.min_requests, args.requests_per_client * clients)
            row = asyncio.run(level(url, texts, clients, requests, args.seconds_per_level))
            rows.append({"server": name, **row})
            print(json.dumps(rows[-1]), flush=True)
        return rows
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def export(model: Path, out: Path, quantize: bool) -> Path:
    if (out / "model.onnx").is_file():
        return out
    command = [*SFT, "export", "--model", str(model), "--output", str(out), "--overwrite"]
    subprocess.run(command + (["--quantize", "int8"] if quantize else []), check=True, stdout=subprocess.DEVNULL)
    return out


def accuracy(model: Path, out: Path) -> float:
    done = subprocess.run([*SFT, "eval", "--model", str(model), "--data", str(DATA / "glue" / "SST-2" / "dev.tsv"),
                           "--output-dir", str(out)], check=True, capture_output=True, text=True)
    return json.loads(done.stdout)["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sst2", type=Path, default=ROOT / "runs" / "sst2" / "model", help="SST-2 model folder")
    parser.add_argument("--conll", type=Path, default=ROOT / "runs" / "conll2003-4k" / "model", help="CoNLL model folder")
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "serve-load", help="exports, logs, results.json")
    parser.add_argument("--levels", type=int, nargs="+", default=list(LEVELS), help="concurrent clients per level")
    parser.add_argument("--requests-per-client", type=int, default=6, help="requests per level: this times the clients")
    parser.add_argument("--min-requests", type=int, default=150, help="at least this many requests per level")
    parser.add_argument("--seconds-per-level", type=float, default=60, help="stop sending after this long")
    parser.add_argument("--servers", nargs="+", default=["sft", "sft-onnx", "sft-onnx-int8", "baseline"])
    parser.add_argument("--models", nargs="+", default=["sst2", "conll"])
    parser.add_argument("--max-batch-size", type=int, default=32, help="sft serve --max-batch-size")
    parser.add_argument("--max-wait-ms", type=float, default=5, help="sft serve --max-wait-ms")
    parser.add_argument("--skip-accuracy", action="store_true", help="do not measure SST-2 dev accuracy")
    parser.add_argument("--threads", type=int, help="sft serve --threads (inference threads)")
    args = parser.parse_args()
    for name in args.models:
        folder = getattr(args, name)
        if not (folder / "sft_task.json").is_file():
            recipe = "sst2" if name == "sst2" else "conll2003-4k"
            sys.exit(f"no model in {folder}: train it with `sft run --config configs/{recipe}.yaml` or give --{name}")
    args.output.mkdir(parents=True, exist_ok=True)
    logs = args.output / "logs"
    logs.mkdir(exist_ok=True)
    results: dict = {"levels": args.levels, "cpus": os.cpu_count(), "rows": {}, "accuracy": {}}
    for name in args.models:
        model = getattr(args, name)
        texts = sst2_sentences() if name == "sst2" else conll_sentences()
        pipeline_task = "text-classification" if name == "sst2" else "token-classification"
        folders = {"sft": model}
        if "sft-onnx" in args.servers:
            folders["sft-onnx"] = export(model, args.output / f"{name}-onnx", quantize=False)
        if "sft-onnx-int8" in args.servers:
            folders["sft-onnx-int8"] = export(model, args.output / f"{name}-onnx-int8", quantize=True)
        if name == "sst2" and "sft-onnx-int8" in folders and not args.skip_accuracy:
            results["accuracy"] = {"pytorch": accuracy(model, args.output / "eval-pytorch"),
                                   "onnx-int8": accuracy(folders["sft-onnx-int8"], args.output / "eval-int8")}
            print(json.dumps({"sst2_dev_accuracy": results["accuracy"]}), flush=True)
        rows = []
        for server in args.servers:
            port = free_port()
            if server == "baseline":
                command = [sys.executable, str(ROOT / "benchmarks" / "baseline_server.py"), "--model", str(model),
                           "--task", pipeline_task, "--port", str(port)]
            else:
                command = [*SFT, "serve", "--model", str(folders[server]), "--port", str(port), "--log-level", "warning",
                           "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
                           *(["--threads", str(args.threads)] if args.threads else [])]
            print(f"# {name}: {server}", flush=True)
            rows += measure(f"{name}-{server}", command, port, texts, args, logs)
        results["rows"][name] = rows
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)


def print_table(results: dict) -> None:
    for name, rows in results["rows"].items():
        print(f"\n## {name}: requests/s, p50 / p95 / p99 ms, failed requests")
        levels = sorted({r["clients"] for r in rows})
        print("| server | " + " | ".join(f"{c} clients" for c in levels) + " |")
        print("|---|" + "---|" * len(levels))
        for server in dict.fromkeys(r["server"] for r in rows):
            cells = []
            for c in levels:
                r = next((r for r in rows if r["server"] == server and r["clients"] == c), None)
                cells.append(f"{r['rps']} req/s, {r['p50_ms']:.0f} / {r['p95_ms']:.0f} / {r['p99_ms']:.0f} ms, "
                             f"{r['failed']} failed" if r else "-")
            print(f"| {server} | " + " | ".join(cells) + " |")
        base = {r["clients"]: r["rps"] for r in rows if r["server"].endswith("-baseline")}
        for server in dict.fromkeys(r["server"] for r in rows if not r["server"].endswith("-baseline")):
            ratios = [f"{c}: {r['rps'] / base[c]:.2f}x" for r in rows if r["server"] == server
                      for c in [r["clients"]] if base.get(c)]
            if ratios:
                print(f"{server} throughput / baseline: " + ", ".join(ratios))
    if results.get("accuracy"):
        print(f"\nSST-2 dev accuracy: {json.dumps(results['accuracy'])}")


if __name__ == "__main__":
    main()
