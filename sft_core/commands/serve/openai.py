"""OpenAI-style routes for generative tasks: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``.

Requests and responses follow the OpenAI API (so its clients work unchanged), with
``stream: true`` answered as server-sent events (``data: {chunk}`` lines, then ``data: [DONE]``).
The prompt of a completion goes to the task as ``sft predict`` would take it; a chat goes to the
task's ``read_messages``, which applies the chat template saved with the model (the instruct task)
or translates the last user message (translation). Without ``temperature`` (or with 0) the
task's own decoding runs (greedy, or beam search where the task sets it), so answers equal ``sft
predict``'s; a positive temperature samples (with ``top_p``, the model's ``top_k``, and ``seed`` to
repeat a draw), streamed or not.

Causal LMs generate with continuous batching (``continuous.py``): every request, streamed or not,
joins the running batch at the next decoding step with its own settings and leaves it when it ends;
a client that disconnects frees its slot. A prompt longer than the model's ``trainer.max_length``
is refused (400, ``context_length_exceeded``), never cut. Other generative models (encoder-decoders,
beam search) keep ``model.generate``: requests with equal settings share batches and a stream runs
greedily on its own. Message ``content`` is a text or a list of text parts; the role ``developer``
is taken as ``system``. Unknown request fields are ignored, as clients send fields this server does
not use; ``n`` other than 1 and ``logprobs`` are refused.
"""


import asyncio
import json
import logging
import time
import uuid

from ...errors import SFTError
from ...engine.predictor import GenerationSettings



def cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to its first stop string, and whether there was one."""
    at = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:at], True) if at >= 0 else (text, False)


class Written:
    """The text a stream has sent, cut at the first stop string: ``add(piece)`` returns what may go
    out of ``piece`` (nothing once a stop string has appeared); ``stopped`` says whether one did."""

    def __init__(self, stops: list[str]):
        self.stops, self.text, self.stopped = stops, "", False

    def add(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        text, self.stopped = cut(self.text + piece, self.stops)
        new, self.text = text[len(self.text):], text
        return new

def add_routes(app, state: dict, settings, batcher, run, ready_predictor, ServerError) -> None:
    """The OpenAI-style routes on ``app``: closures over the server's state, as ``create_app``'s
    routes are (one function so that the routes read together; each is a few lines)."""
    from fastapi import Request as HTTPRequest
    from fastapi.responses import Response, StreamingResponse

    from .continuous import wait_all

    log = logging.getLogger("uvicorn.error")

    from .schemas import ChatRequest, CompletionRequest
    from .schemas import _Generation as Common

    def model_name() -> str:
        from pathlib import Path

        folder = Path((state["predictor"] or ready_predictor()).model_dir).resolve()
        # RUN/model, as sft run writes it, is named after its run
        return settings.model_name or (folder.parent.name if folder.name == "model" else folder.name)

    def generative():
        predictor = ready_predictor()
        if not predictor.generative:
            raise ServerError(404, f"task {predictor.task_name!r} does not generate text; use POST /predict",
                              kind="not_found_error")
        return predictor

    def generation(body: Common) -> tuple[GenerationSettings, list[str]]:
        if body.logprobs:
            raise ServerError(422, "logprobs are not supported", "logprobs")
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        limit = body.max_completion_tokens or body.max_tokens
        return GenerationSettings(max_new_tokens=limit, temperature=body.temperature or None,
                                  top_p=body.top_p, seed=body.seed), stops

    def tokens(text: str) -> int:
        return len(state["tokenizer"](text, add_special_tokens=False)["input_ids"])


    def read_examples(predictor, prompts=None, conversation=None) -> list[dict]:
        try:
            return predictor.generation_examples(prompts, [conversation] if conversation is not None else None)
        except SFTError as exc:
            raise ServerError(422, str(exc), "messages" if conversation is not None else "prompt") from None

    async def planned(predictor, examples: list[dict], field: str, gen: GenerationSettings, stops: list[str]):
        """(features, requests) for continuous batching, one request per example; (features, None)
        for a model that keeps ``model.generate``. Built on the inference thread, which owns the tokenizer."""
        try:
            features, plan = await batcher.call(predictor.plan_generation, examples)
        except SFTError as exc:
            raise ServerError(422, str(exc), field) from None
        generation = state.get("generation")
        if plan is None or generation is None:
            return features, None
        limit = predictor.config.trainer.max_length
        for n, cut_off in enumerate(plan.truncated):
            if cut_off:
                log.warning("refused a prompt over trainer.max_length=%d tokens (400 context_length_exceeded)", limit)
                raise ServerError(400, f"{field}{f'[{n}]' if len(examples) > 1 else ''} is longer than the model's "
                                       f"context of {limit} tokens (trainer.max_length); shorten it",
                                  field, code="context_length_exceeded")
        requests = predictor.generation_requests(plan, gen, stops)
        by_example = dict(zip(features["example_id"], requests))
        requests = [by_example[i] for i in range(len(examples))]
        budget = generation.batcher
        for request in requests:
            if not budget.fits(request):
                raise ServerError(400, f"a prompt of {len(request.prompt)} tokens and max_tokens "
                                       f"{request.max_new_tokens} exceed the server's --max-batch-tokens "
                                       f"({budget.max_batch_tokens}); ask for fewer tokens", "max_tokens",
                                  code="context_length_exceeded")
        if generation.full(len(requests)):
            raise ServerError(429, f"{generation.waiting} sequences are waiting (the server's --max-queue); retry later",
                              headers={"Retry-After": "1"}, kind="rate_limit_error")
        if state["drained"]:
            raise ServerError(503, "the server is shutting down", headers={"Retry-After": "1"}, kind="server_error")
        return features, requests

    async def generated(raw: HTTPRequest, predictor, features, examples, requests):
        """Run ``requests`` through the batch; (texts, requests) or None when the client went away."""
        generation = state["generation"]
        queues = [generation.submit(r) for r in requests]
        done = await wait_all(queues, lambda: [generation.cancel(r) for r in requests], gone(raw))
        if done is None:
            return None
        failed(done)
        predictions = await batcher.call(predictor.finish_generation, features, examples, done)
        return [predictor.task.prediction_text(p) for p in predictions]

    def failed(requests) -> None:
        for request in requests:
            if request.finish_reason == "unavailable":
                raise ServerError(503, "the server shut down before this request could finish; retry",
                                  headers={"Retry-After": "1"}, kind="server_error")
            if request.finish_reason == "error":
                raise ServerError(500, f"inference failed: {type(request.error).__name__}: {request.error}",
                                  kind="server_error")

    @app.get("/v1/models", summary="The model this server serves (OpenAI format)")
    async def models():
        return {"object": "list", "data": [{"id": model_name(), "object": "model", "created": 0, "owned_by": "sft"}]}

    @app.post("/v1/completions", summary="Text completion (OpenAI format; stream: true for server-sent events)")
    async def completions(body: CompletionRequest, raw: HTTPRequest):
        predictor = generative()
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not all(p.strip() for p in prompts):
            raise ServerError(422, "prompt: empty text", "prompt")
        if body.stream and len(prompts) != 1:
            raise ServerError(422, "stream: give one prompt per streamed request", "prompt")
        gen, stops = generation(body)
        examples = read_examples(predictor, prompts=prompts)
        features, requests = await planned(predictor, examples, "prompt", gen, stops)
        name, created, rid = model_name(), int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            def chunk(piece: str, reason):
                return {"id": rid, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": reason}]}

            if requests is None:
                return stream(predictor, examples, gen, stops, chunk, first=None)
            return stream_continuous(raw, requests[0], stops, chunk, first=None)
        if requests is None:
            results = await run(("generate", gen), examples, len(examples))
            texts = [r["text"] for r in results]
            counts = [(r["tokens"], r["finish_reason"]) for r in results]
            prompt_tokens = sum(tokens(p) for p in prompts)
        else:
            texts = await generated(raw, predictor, features, examples, requests)
            if texts is None:
                return Response(status_code=499)  # the client went away: nobody reads this
            counts = [(len(r.tokens), r.finish_reason) for r in requests]
            prompt_tokens = sum(len(r.prompt) for r in requests)
        choices, usage = [], {"prompt_tokens": prompt_tokens, "completion_tokens": 0}
        for i, (whole, (count, reason)) in enumerate(zip(texts, counts)):
            text, stopped = cut(whole, stops)
            usage["completion_tokens"] += tokens(text) if stopped else count
            choices.append({"text": text, "index": i, "logprobs": None, "finish_reason": "stop" if stopped else reason})
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": rid, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": usage}

    @app.post("/v1/chat/completions", summary="Chat completion (OpenAI format; stream: true for server-sent events)")
    async def chat(body: ChatRequest, raw: HTTPRequest):
        predictor = generative()
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        if messages[-1]["role"] != "user":
            raise ServerError(422, "messages: the last message must be the user's", "messages")
        empty = next((n for n, m in enumerate(messages) if m["role"] == "user" and not m["content"].strip()), None)
        if empty is not None:
            raise ServerError(422, f"messages[{empty}].content: empty text", f"messages.{empty}.content")
        gen, stops = generation(body)
        examples = read_examples(predictor, conversation=messages)
        features, requests = await planned(predictor, examples, "messages", gen, stops)
        name, created, rid = model_name(), int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            def chunk(piece, reason):
                delta = {} if piece is None else {"content": piece}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}

            first = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            if requests is None:
                return stream(predictor, examples, gen, stops, chunk, first=first)
            return stream_continuous(raw, requests[0], stops, chunk, first=first)
        if requests is None:
            (result,) = await run(("generate", gen), examples, 1)
            whole, count, reason = result["text"], result["tokens"], result["finish_reason"]
            prompt_tokens = sum(tokens(m["content"]) for m in messages)
        else:
            texts = await generated(raw, predictor, features, examples, requests)
            if texts is None:
                return Response(status_code=499)
            whole, count, reason = texts[0], len(requests[0].tokens), requests[0].finish_reason
            prompt_tokens = len(requests[0].prompt)  # the rendered template, system prompt included
        text, stopped = cut(whole, stops)
        completion_tokens = tokens(text) if stopped else count
        return {"id": rid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop" if stopped else reason}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    async def gone(raw: HTTPRequest) -> None:
        """Returns when the client has gone away (the body is read: what comes next is the disconnect)."""
        while (await raw.receive())["type"] != "http.disconnect":
            pass

    def stream_continuous(raw: HTTPRequest, request, stops: list[str], chunk, first):
        """Server-sent events of one sequence of the continuous batch, piece by piece as it is made; a
        client that goes away ends the sequence at once, not at the next piece that fails to send."""
        generation = state["generation"]
        events = generation.submit(request)

        async def sent():
            watcher = asyncio.ensure_future(gone(raw))
            watcher.add_done_callback(lambda task: task.cancelled() or generation.cancel(request))
            try:
                if first is not None:
                    yield f"data: {json.dumps(first)}\n\n"
                written = Written(stops)
                while True:
                    kind, value = await events.get()
                    if kind == "end":
                        break
                    if piece := written.add(value):
                        yield f"data: {json.dumps(chunk(piece, None))}\n\n"
                try:
                    failed([value])
                except ServerError as exc:  # headers are sent: the error is the stream's last event
                    yield f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.kind}})}\n\n"
                    return
                reason = "stop" if written.stopped or value.finish_reason == "stop" else "length"
                yield f"data: {json.dumps(chunk(None if first is not None else '', reason))}\n\n"
                yield "data: [DONE]\n\n"
            finally:  # the client went away (the response is cancelled) or the stream ended
                watcher.cancel()
                generation.cancel(request)

        return StreamingResponse(sent(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def stream(predictor, examples, gen: GenerationSettings, stops: list[str], chunk, first):
        """Server-sent events of one ``model.generate`` (models without continuous batching), run on its own."""
        from transformers import TextIteratorStreamer

        if batcher.queued + 1 > batcher.max_queue:
            raise ServerError(429, "the queue is full", headers={"Retry-After": "1"}, kind="rate_limit_error")
        streamer = TextIteratorStreamer(predictor.tokenizer, skip_prompt=True, skip_special_tokens=True)
        lengths: list = []
        job = asyncio.ensure_future(batcher.run_alone(
            lambda: predictor.predict_examples(examples, gen, streamer, lengths=lengths)))
        # an exception inside generation ends the stream instead of leaving the reader waiting
        job.add_done_callback(lambda _: streamer.text_queue.put(streamer.stop_signal))

        def next_piece(iterator):
            return next(iterator, None)

        async def events():
            loop = asyncio.get_running_loop()
            if first is not None:
                yield f"data: {json.dumps(first)}\n\n"
            written, iterator = Written(stops), iter(streamer)
            while True:
                piece = await loop.run_in_executor(None, next_piece, iterator)
                if piece is None:
                    break
                if piece := written.add(piece):
                    yield f"data: {json.dumps(chunk(piece, None))}\n\n"
            try:
                await job
            except Exception as exc:  # headers are sent: the error is the stream's last event
                yield f"data: {json.dumps({'error': {'message': f'inference failed: {type(exc).__name__}: {exc}', 'type': 'server_error'}})}\n\n"
                return
            reason = "length" if not written.stopped and lengths and lengths[0][1] else "stop"
            yield f"data: {json.dumps(chunk(None if first is not None else '', reason))}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
