"""``sft serve``: a model folder behind an HTTP API with dynamic batching (FastAPI and uvicorn).
Causal LMs generate with continuous batching (``continuous``).

Attached to the CLI through ``sft_register_commands``, as a third-party command would be; FastAPI,
uvicorn and prometheus-client (the ``serve`` extra) are imported only when the command runs.
``app`` holds the routes, ``batcher`` the dynamic batching, ``openai`` the OpenAI-style routes.
The server is generic: it calls a ``Predictor``, and tasks stay unaware of HTTP.
"""

from __future__ import annotations

import click

from ...host.hookspecs import hookimpl
from ...errors import SFTError


def serve(model_dir: str, host, bind: str = "127.0.0.1", port: int = 8000, settings=None, threads: int | None = None,
          drain_seconds: float = 30.0, log_level: str = "info", model_batch_size: int | None = None) -> None:
    """Serve ``model_dir`` until SIGINT or SIGTERM; in-flight requests are answered before exit."""
    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn
    except ImportError as exc:
        raise SFTError(f"sft serve needs {exc.name}: pip install 'sft-core[serve]'") from None
    from pathlib import Path

    from ...engine.checkpoint import TASK_FILE
    from .app import ServeSettings, create_app

    if not (Path(model_dir) / TASK_FILE).is_file():  # fail before the server starts, not in /ready
        raise SFTError(f"{model_dir} is not a model folder written by sft (no {TASK_FILE}); give RUN/model "
                       "or a folder written by `sft export`")
    settings = settings or ServeSettings()

    import sys
    import time

    def load():
        started = time.monotonic()
        if threads:
            import torch

            torch.set_num_threads(threads)
        from ...engine.predictor import Predictor

        predictor = Predictor(model_dir, host, batch_size=settings.max_batch_size)
        # uvicorn says it runs before the model is loaded (/ready answers 503 until then): say when it is
        print(f"sft serve: {model_dir} loaded in {time.monotonic() - started:.1f} s; ready on "
              f"http://{bind}:{port} (GET /ready answers 200)", file=sys.stderr, flush=True)
        # a dynamic batch runs as length-sorted model calls of this many inputs: on a CPU, small
        # calls waste less compute on padding and lose no speed; a GPU takes the whole batch at once
        cpu = predictor.accelerator.device.type == "cpu"
        predictor.batch_size = model_batch_size or (min(8, settings.max_batch_size) if cpu else settings.max_batch_size)
        return predictor

    settings.drain_seconds = drain_seconds
    app = create_app(load, settings)
    # the drain: requests in flight have drain_seconds; then what is left is answered 503 (app.state.drain),
    # uvicorn gets a few more seconds to send those answers, and a last timer ends the process regardless
    # (a model call that cannot be interrupted)
    grace = 10.0
    config = uvicorn.Config(app, host=bind, port=port, log_level=log_level,
                            timeout_graceful_shutdown=drain_seconds + grace, access_log=False)
    import os
    import signal
    import threading

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not self.should_exit:
                print(f"sft serve: draining: requests in flight have {drain_seconds:g} s (--drain-seconds)",
                      file=sys.stderr, flush=True)
                app.state.drain()
                last = threading.Timer(drain_seconds + 2 * grace, _exit_now)
                last.daemon = True
                last.start()
            super().handle_exit(sig, frame)

    def drained(*_):
        # uvicorn drains on SIGTERM/SIGINT, then raises the signal again with the handlers it found:
        # a drained shutdown exits with status 0 rather than die of the signal, and without waiting for
        # a model call still running on the inference thread (its request was answered 503)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, drained)
    Server(config).run()


def _exit_now() -> None:
    import os
    import sys

    print("sft serve: the drain did not end in time; exiting", file=sys.stderr, flush=True)
    os._exit(1)


@click.command("serve")
@click.option("--model", "model_dir", required=True, type=click.Path(), help="Model folder written by `sft run` "
              "(RUN/model) or by `sft export` (served through onnxruntime).")
@click.option("--host", "bind", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0 to accept other machines).")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--max-batch-size", default=32, show_default=True, type=click.IntRange(min=1),
              help="Most inputs run together in one model call; most sequences generated at once.")
@click.option("--max-batch-tokens", default=16384, show_default=True, type=click.IntRange(min=1),
              help="Generation: the KV cache of the running batch, in tokens (sequences x padded length); "
                   "requests beyond it wait.")
@click.option("--generation", type=click.Choice(["continuous", "static"]), default="continuous", show_default=True,
              help="Causal LMs: continuous batching (sequences join and leave the batch at every step), or static "
                   "batches of model.generate (requests with equal settings; each stream alone), for comparison.")
@click.option("--max-wait-ms", default=5.0, show_default=True, type=click.FloatRange(min=0),
              help="How long the first queued request waits for others to share its batch.")
@click.option("--max-queue", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Most inputs (or sequences to generate) waiting; beyond it requests get 429 with Retry-After.")
@click.option("--max-request-bytes", default=1 << 20, show_default=True, type=click.IntRange(min=1),
              help="Largest request body; larger ones get 413.")
@click.option("--long-inputs", type=click.Choice(["truncate", "reject"]), default="truncate", show_default=True,
              help="An input over the model's max_length: truncated and flagged (\"truncated\": true), or 413.")
@click.option("--model-batch-size", type=click.IntRange(min=1),
              help="Inputs per model call within a batch, length-sorted [default: 8 on a CPU, else --max-batch-size].")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for inference [default: the library's].")
@click.option("--model-name", help="The model name in OpenAI-style responses [default: the folder's name].")
@click.option("--drain-seconds", default=30.0, show_default=True, type=float,
              help="On SIGTERM, how long in-flight requests may take to finish; those that cannot are answered "
                   "503, and the process exits.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]), help="uvicorn's log level.")
@click.pass_context
def serve_command(ctx, model_dir, bind, port, max_batch_size, max_batch_tokens, generation, max_wait_ms, max_queue, max_request_bytes, long_inputs,
                  model_batch_size, threads, model_name, drain_seconds, log_level):
    """Serve a model over HTTP: POST /predict, OpenAI-style /v1 routes for generative tasks, /metrics.

    \b
    Examples:
      sft serve --model runs/sst2/model
      curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"inputs": ["a gripping film"]}'
      sft serve --model exported/sst2-int8 --port 8001
    Open http://127.0.0.1:8000/docs for every route and its schema.
    """
    from .app import ServeSettings

    settings = ServeSettings(max_batch_size=max_batch_size, max_batch_tokens=max_batch_tokens,
                             generation=generation, max_wait_ms=max_wait_ms, max_queue=max_queue, max_request_bytes=max_request_bytes, long_inputs=long_inputs, model_name=model_name)
    serve(model_dir, ctx.find_root().obj, bind=bind, port=port, settings=settings, threads=threads,
          drain_seconds=drain_seconds, log_level=log_level, model_batch_size=model_batch_size)


@hookimpl
def sft_register_commands(cli):
    """Adds ``sft serve``."""
    cli.add_command(serve_command)
