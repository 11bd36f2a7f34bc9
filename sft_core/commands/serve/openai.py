"""OpenAI-style routes for generative tasks: ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models``.

Requests and responses follow the OpenAI API (so its clients work unchanged), with
``stream: true`` answered as server-sent events (``data: {chunk}`` lines, then ``data: [DONE]``).
The prompt of a completion goes to the task as ``sft predict`` would take it; a chat goes to the
task's ``read_messages``, which applies the chat template saved with the model (the instruct task)
or translates the last user message (translation). Without ``temperature`` (or with 0) the
task's own decoding runs (greedy or beam search), so answers equal ``sft predict``'s; a positive
temperature samples (with ``top_p``, and ``seed`` to repeat a draw). Streams decode greedily
(transformers' streamers follow one sequence, beam search cannot stream). Requests with equal
settings share batches; a stream runs on its own. Unknown request fields are ignored, as clients
send fields this server does not use; ``n`` other than 1 and ``logprobs`` are refused.
"""


import asyncio
import json
import time
import uuid

from ...errors import SFTError
from ...engine.predictor import GenerationSettings


def add_routes(app, state: dict, settings, batcher, run, ready_predictor, ServerError) -> None:
    """The OpenAI-style routes on ``app``: closures over the server's state, as ``create_app``'s
    routes are (one function so that the routes read together; each is a few lines)."""
    from fastapi.responses import StreamingResponse

    from .schemas import ChatRequest, CompletionRequest
    from .schemas import _Generation as Common

    def model_name() -> str:
        from pathlib import Path

        folder = Path(ready_predictor().model_dir).resolve()
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

    def cut(text: str, stops: list[str]) -> tuple[str, bool]:
        at = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
        return (text[:at], True) if at >= 0 else (text, False)

    def tokens(text: str) -> int:
        return len(state["tokenizer"](text, add_special_tokens=False)["input_ids"])


    def read_examples(predictor, prompts=None, conversation=None) -> list[dict]:
        try:
            return predictor.generation_examples(prompts, [conversation] if conversation is not None else None)
        except SFTError as exc:
            raise ServerError(422, str(exc), "messages" if conversation is not None else "prompt") from None

    @app.get("/v1/models", summary="The model this server serves (OpenAI format)")
    async def models():
        return {"object": "list", "data": [{"id": model_name(), "object": "model", "created": 0, "owned_by": "sft"}]}

    @app.post("/v1/completions", summary="Text completion (OpenAI format; stream: true for server-sent events)")
    async def completions(body: CompletionRequest):
        predictor = generative()
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not all(p.strip() for p in prompts):
            raise ServerError(422, "prompt: empty text", "prompt")
        gen, stops = generation(body)
        examples = read_examples(predictor, prompts=prompts)
        name, created, rid = model_name(), int(time.time()), f"cmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            if len(prompts) != 1:
                raise ServerError(422, "stream: give one prompt per streamed request", "prompt")

            def chunk(piece: str, reason):
                return {"id": rid, "object": "text_completion", "created": created, "model": name,
                        "choices": [{"text": piece, "index": 0, "logprobs": None, "finish_reason": reason}]}

            return stream(predictor, examples, gen, stops, chunk, first=None)
        results = await run(("generate", gen), examples, len(examples))
        choices, usage = [], {"prompt_tokens": sum(tokens(p) for p in prompts), "completion_tokens": 0}
        for i, result in enumerate(results):
            text, stopped = cut(result["text"], stops)
            usage["completion_tokens"] += tokens(text) if stopped else result["tokens"]
            choices.append({"text": text, "index": i, "logprobs": None,
                            "finish_reason": "stop" if stopped else result["finish_reason"]})
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        return {"id": rid, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": usage}

    @app.post("/v1/chat/completions", summary="Chat completion (OpenAI format; stream: true for server-sent events)")
    async def chat(body: ChatRequest):
        predictor = generative()
        messages = [{"role": m.role, "content": m.content} for m in body.messages]
        if messages[-1]["role"] != "user":
            raise ServerError(422, "messages: the last message must be the user's", "messages")
        gen, stops = generation(body)
        examples = read_examples(predictor, conversation=messages)
        name, created, rid = model_name(), int(time.time()), f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if body.stream:
            def chunk(piece, reason):
                delta = {} if piece is None else {"content": piece}
                return {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": reason}]}

            first = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": name,
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
            return stream(predictor, examples, gen, stops, chunk, first=first)
        (result,) = await run(("generate", gen), examples, 1)
        text, stopped = cut(result["text"], stops)
        prompt_tokens = sum(tokens(m["content"]) for m in messages)
        completion_tokens = tokens(text) if stopped else result["tokens"]
        return {"id": rid, "object": "chat.completion", "created": created, "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "stop" if stopped else result["finish_reason"]}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    def stream(predictor, examples, gen: GenerationSettings, stops: list[str], chunk, first):
        """Server-sent events of one generation, piece by piece as the model writes it."""
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
            text, stopped, iterator = "", False, iter(streamer)
            while True:
                piece = await loop.run_in_executor(None, next_piece, iterator)
                if piece is None:
                    break
                if stopped or not piece:
                    continue
                candidate, stopped = cut(text + piece, stops)
                if len(candidate) > len(text):
                    yield f"data: {json.dumps(chunk(candidate[len(text):], None))}\n\n"
                text = candidate
            try:
                await job
            except Exception as exc:  # headers are sent: the error is the stream's last event
                yield f"data: {json.dumps({'error': {'message': f'inference failed: {type(exc).__name__}: {exc}', 'type': 'server_error'}})}\n\n"
                return
            reason = "length" if not stopped and lengths and lengths[0][1] else "stop"
            yield f"data: {json.dumps(chunk(None if first is not None else '', reason))}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
