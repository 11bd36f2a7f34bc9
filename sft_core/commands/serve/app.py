"""The HTTP API of ``sft serve``: a FastAPI app around one ``Predictor`` and one ``Batcher``.

Routes: ``POST /predict`` (for each input, what ``sft predict`` prints), ``GET /health`` (the
process answers), ``GET /ready`` (the model is loaded), ``GET /info``, ``GET /metrics``
(Prometheus text), and for generative tasks the OpenAI-style ``/v1/completions``,
``/v1/chat/completions`` and ``/v1/models`` (``openai.py``). Tasks know nothing of HTTP: the app
only calls the predictor.

Status codes: 400 a body that is not JSON (or not sent as ``application/json``), or a prompt over
the model's context; 422 a wrong field (named); 413 a body over ``max_request_bytes`` (the rest of
the body is read and discarded, up to a bound, so the client sees the answer) or an input over the
model's length when ``long_inputs="reject"``; 429 the queue is full (with ``Retry-After``); 500 an
exception inside inference (that batch only); 503 while the model loads and while the server drains
(requests that could not finish within the drain bound are answered 503, not dropped).
"""


import asyncio
import copy
import json
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass

from ...errors import SFTError
from .batcher import Batcher, QueueFull

ROUTES = ("/predict", "/health", "/ready", "/info", "/metrics", "/v1/completions", "/v1/chat/completions",
          "/v1/models", "/docs", "/openapi.json")


@dataclass
class ServeSettings:
    """The server's limits; ``sft serve`` options of the same names."""

    max_batch_size: int = 32  # inputs per model call; sequences generated at once
    max_batch_tokens: int | None = 16384  # the generation KV cache: sequences x padded width, in tokens
    max_wait_ms: float = 5.0
    max_queue: int = 1024  # inputs waiting, over all requests
    max_request_bytes: int = 1 << 20
    long_inputs: str = "truncate"  # or "reject": 413 for an input over the model's max_length
    model_name: str | None = None  # the "model" of OpenAI responses (default: the folder's name)
    generation: str = "continuous"  # or "static": model.generate on batches of equal settings (for comparison)
    drain_seconds: float = 30.0  # on SIGTERM: how long in-flight requests may take; the rest get 503


class _Metrics:
    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("sft_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("sft_request_seconds", "Time to answer a request (streams: to the first byte)",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.batch_size = Histogram("sft_batch_size", "Inputs per model call of the batcher", registry=self.registry,
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.batch_seconds = Histogram("sft_batch_seconds", "Time of one model call of the batcher",
                                       registry=self.registry)
        self.queue_depth = Gauge("sft_queue_depth", "Inputs waiting for the model", registry=self.registry)
        self.inputs = Counter("sft_inputs", "Inputs predicted", registry=self.registry)
        # generation with continuous batching
        self.first_token = Histogram("sft_time_to_first_token_seconds", "From a generation request's arrival to "
                                     "its first token", registry=self.registry,
                                     buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
        self.tokens = Counter("sft_generated_tokens", "Tokens generated", registry=self.registry)
        self.tokens_per_second = Gauge("sft_generated_tokens_per_second", "Tokens generated per second over the "
                                       "last 10 s", registry=self.registry)
        self.running = Gauge("sft_running_sequences", "Sequences in the running generation batch",
                             registry=self.registry)
        self.waiting = Gauge("sft_waiting_sequences", "Sequences waiting to join the generation batch",
                             registry=self.registry)
        self.finished = Counter("sft_finished_sequences", "Generated sequences by how they ended (stop, length, "
                                "cancelled: the client went away, unavailable: the drain ended it, error)",
                                ["reason"], registry=self.registry)


class _Guard:
    """ASGI middleware: the request body limit (413) and the request metrics, for every route."""

    def __init__(self, app, settings: ServeSettings, metrics: _Metrics):
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        started = time.perf_counter()
        status = {"code": 500}

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            await send(message)

        try:
            limit = self.settings.max_request_bytes
            declared = dict(scope.get("headers") or []).get(b"content-length")
            body, over = b"", declared is not None and declared.isdigit() and int(declared) > limit
            more = scope["method"] in ("POST", "PUT", "PATCH")
            if not over and more:
                while more and not over:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return
                    body += message.get("body", b"")
                    more = message.get("more_body", False)
                    over = len(body) > limit
            if over:
                # read and drop the rest (as nginx's lingering close): a client still sending would
                # otherwise see a broken pipe instead of the 413
                await _discard_body(receive, more, bound=max(4 * limit, 64 << 20))
                return await _send_json(sending, 413, _error_body(route, f"request body over {limit} bytes "
                                                                         "(the server's --max-request-bytes)"),
                                        {"Connection": "close"})
            replayed = False

            async def replay():
                nonlocal replayed
                if not replayed and scope["method"] in ("POST", "PUT", "PATCH"):
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await self.app(scope, replay, sending)
        finally:
            self.metrics.requests.labels(route, str(status["code"])).inc()


async def _discard_body(receive, more: bool, bound: int, seconds: float = 10.0) -> None:
    """Receive and drop a request body's remaining messages: up to ``bound`` bytes, for ``seconds``."""
    if not more:
        return
    dropped, deadline = 0, time.monotonic() + seconds
    while dropped <= bound and (left := deadline - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except asyncio.TimeoutError:
            return
        if message["type"] != "http.request":
            return
        dropped += len(message.get("body", b""))
        if not message.get("more_body", False):
            return


async def _send_json(send, status: int, body: dict, headers: dict | None = None) -> None:
    raw = json.dumps(body).encode()
    extra = [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode()), *extra]})
    await send({"type": "http.response.body", "body": raw})


def _error_body(route: str, message: str, field: str | None = None, kind: str = "invalid_request_error",
                code: str | None = None) -> dict:
    """FastAPI's ``{"detail": ...}`` for sft's routes, OpenAI's ``{"error": ...}`` for /v1 routes."""
    if route.startswith("/v1"):
        return {"error": {"message": message, "type": kind, "param": field, "code": code}}
    return {"detail": [{"loc": ["body", *(field.split(".") if field else [])], "msg": message}]}


class ServerError(Exception):
    """An answer other than 200: status, message, the field it concerns, extra headers."""

    def __init__(self, status: int, message: str, field: str | None = None, headers: dict | None = None,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field, self.headers, self.kind = status, message, field, headers, kind
        self.code = code


def create_app(predictor_or_loader, settings: ServeSettings | None = None):
    """The FastAPI app; ``predictor_or_loader`` is a ``Predictor`` or a function returning one, called
    on a thread at start-up (``/ready`` answers 503 until it returns).

    Longer than the engine's functions on purpose: FastAPI routes are closures over the app's state
    and its batcher, each route a few lines, and reading them in one place is the point."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    from .schemas import PredictRequest

    settings = settings or ServeSettings()
    metrics = _Metrics()
    state = {"predictor": None, "error": None, "tokenizer": None, "generation": None, "draining": False,
             "drained": False}

    def run_batch(key, payloads: list) -> list:
        predictor = state["predictor"]
        examples = [e for payload in payloads for e in payload]
        if key == "predict":
            predictions = predictor.predict_examples(examples)
            records = predictor.records(predictions, examples)
        else:  # ("generate", settings): generated texts, their token counts and why they ended
            lengths: list = []
            predictions = predictor.predict_examples(examples, key[1], lengths=lengths)
            records = [{"text": predictor.task.prediction_text(p), "tokens": n, "finish_reason": "length" if cut else "stop"}
                       for p, (n, cut) in zip(predictions, lengths)]
        metrics.inputs.inc(len(examples))
        out, start = [], 0
        for payload in payloads:
            out.append(records[start:start + len(payload)])
            start += len(payload)
        return out

    def on_batch(size: int, seconds: float) -> None:
        metrics.batch_size.observe(size)
        metrics.batch_seconds.observe(seconds)

    batcher = Batcher(run_batch, settings.max_batch_size, settings.max_wait_ms, settings.max_queue, on_batch)
    metrics.queue_depth.set_function(lambda: batcher.queued)

    def load() -> None:
        try:
            predictor = predictor_or_loader() if callable(predictor_or_loader) else predictor_or_loader
            # tokenizers keep truncation settings in their Rust state: counting tokens here, while
            # the inference thread encodes, must not share one object
            state["tokenizer"] = copy.deepcopy(predictor.tokenizer)
            if predictor.generative and predictor.continuous_batching and settings.generation == "continuous":
                from .continuous import Generation

                state["generation"] = Generation(predictor, settings, metrics)
            state["predictor"] = predictor
        except BaseException as exc:  # reported by /ready and /info; the process keeps answering
            state["error"] = f"{type(exc).__name__}: {exc}"

    @asynccontextmanager
    async def lifespan(app):
        state["loop"] = asyncio.get_running_loop()
        batcher.start()
        if callable(predictor_or_loader):
            threading.Thread(target=load, name="sft-load", daemon=True).start()
        else:
            load()
        yield
        if state["generation"] is not None:
            state["generation"].close()
        await batcher.stop()

    app = FastAPI(title="sft serve", version="1", lifespan=lifespan,
                  description="Predictions of a model fine-tuned with sft, batched dynamically.")
    app.state.batcher = batcher
    app.state.settings = settings
    app.state.model = state

    def drain() -> None:
        """SIGTERM (the listening socket is closed; requests in flight go on): /ready answers 503, and
        after ``drain_seconds`` what is still generating or waiting ends with 503. From any thread."""
        state["loop"].call_soon_threadsafe(start_drain)

    def start_drain() -> None:
        state["draining"] = True

        def expire():
            state["drained"] = True
            ended = state["generation"].drain() if state["generation"] is not None else 0
            ended += batcher.fail_pending(ServerError(503, "the server shut down before this request could run; "
                                                           "retry", headers={"Retry-After": "1"}, kind="server_error"))
            if ended:
                import sys

                print(f"sft serve: {ended} request(s) not finished within --drain-seconds "
                      f"{settings.drain_seconds:g} answered 503", file=sys.stderr, flush=True)

        asyncio.get_running_loop().call_later(settings.drain_seconds, expire)

    app.state.drain = drain

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        route = request.url.path
        if any(e.get("type") == "json_invalid" for e in errors):
            problem = next(e for e in errors if e.get("type") == "json_invalid")
            reason = (problem.get("ctx") or {}).get("error", "")
            return JSONResponse(_error_body(route, f"the request body is not valid JSON ({reason} at character "
                                                   f"{problem['loc'][-1]})"), status_code=400)
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type:
            return JSONResponse(_error_body(route, f"send the body as JSON with the header Content-Type: "
                                                   f"application/json (got {content_type or 'no content type'})"),
                                status_code=400)
        if route.startswith("/v1"):
            first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
            field = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
            return JSONResponse(_error_body("/v1", f"{field or 'body'}: {first.get('msg')}", field), status_code=422)
        detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(ServerError)
    async def server_error(request: Request, exc: ServerError):
        return JSONResponse(_error_body(request.url.path, exc.message, exc.field, exc.kind, exc.code),
                            status_code=exc.status, headers=exc.headers)

    def ready_predictor():
        if state["drained"]:  # past the drain bound: whatever still arrives is not started
            raise ServerError(503, "the server is shutting down", headers={"Retry-After": "1"}, kind="server_error")
        if state["predictor"] is None:
            raise ServerError(503, f"the model failed to load: {state['error']}" if state["error"]
                              else "the model is loading", kind="server_error", headers={"Retry-After": "1"})
        return state["predictor"]

    async def run(key, examples: list, size: int):
        try:
            return await batcher.submit(key, examples, size)
        except QueueFull as exc:
            raise ServerError(429, str(exc), headers={"Retry-After": f"{exc.retry_after:.0f}"},
                              kind="rate_limit_error") from None
        except SFTError as exc:
            raise ServerError(422, str(exc)) from None
        except Exception as exc:
            raise ServerError(500, f"inference failed: {type(exc).__name__}: {exc}", kind="server_error") from None

    @app.post("/predict", summary="Predict for a list of inputs (what `sft predict` prints for each)")
    async def predict(body: PredictRequest):
        predictor = ready_predictor()
        if len(body.inputs) > settings.max_queue:
            raise ServerError(413, f"{len(body.inputs)} inputs in one request; at most {settings.max_queue} "
                                   "(the server's --max-queue)", "inputs")
        try:
            examples = predictor.examples(list(body.inputs))
        except SFTError as exc:
            raise ServerError(422, str(exc), "inputs") from None
        truncated = truncation_flags(predictor, list(body.inputs))
        records = await run("predict", examples, len(examples))
        return {"predictions": [{**r, "truncated": True} if cut else r for r, cut in zip(records, truncated)]}

    def truncation_flags(predictor, inputs: list) -> list[bool]:
        limit = predictor.config.trainer.max_length
        counts = predictor.input_tokens(inputs, state["tokenizer"])
        for n, count in enumerate(counts):
            if count is not None and count > limit and settings.long_inputs == "reject":
                raise ServerError(413, f"inputs[{n}] is {count} tokens long, over the model's {limit} "
                                       "(the server rejects long inputs; start it with --long-inputs truncate "
                                       "to truncate them)", f"inputs.{n}")
        return [count is not None and count > limit for count in counts]

    @app.get("/health", summary="Liveness: the process answers")
    async def health():
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: the model is loaded (503 while loading and while draining)")
    async def ready():
        if state["draining"]:
            raise ServerError(503, "the server is draining", kind="server_error")
        ready_predictor()
        return {"status": "ready"}

    @app.get("/info", summary="Task, model, labels, versions and the server's limits")
    async def info():
        predictor = ready_predictor()
        generation = state["generation"]
        sequences = ({"running_sequences": len(generation.batcher.running), "waiting_sequences": generation.waiting}
                     if generation is not None else {})
        return {**predictor.info(), "limits": asdict(settings), "queued": batcher.queued, "running": batcher.running,
                "continuous_batching": generation is not None, **sequences}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    from .openai import add_routes

    add_routes(app, state, settings, batcher, run, ready_predictor, ServerError)
    app.add_middleware(_Guard, settings=settings, metrics=metrics)
    return app
