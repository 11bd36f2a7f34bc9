"""``sft serve`` generating with continuous batching: streamed and whole answers in one running
batch equal to one request at a time, per-request settings inside it, a client that goes away, a
full queue, the official ``openai`` client streaming, and the defects found in the server (usage,
long prompts, content parts and the developer role, empty messages, malformed JSON, 413 to a
client still sending, the drain). A tiny Llama; the batcher is paused while requests queue, so
what shares a step does not depend on the machine's speed."""

from __future__ import annotations

import json
import threading

import pytest
import torch

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from sft_core.engine.predictor import Predictor  # noqa: E402
from sft_core.testing import build_tiny_model, run_engine  # noqa: E402

from test_serve import CASES, poll, serving, wait_ready  # noqa: E402

QUESTIONS = ["What is the capital of France?", "Name a colour.", "What is the capital of France? " * 3,
             "Say yes.", "Name a colour and a city, please. " * 2, "Why?"]


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    """A tiny instruct model whose answers run to their length limit (weights drawn large: varied text)."""
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("serve-generation")
    case = CASES["instruct"]
    run_engine(case, build_tiny_model(case, root / "tiny"), root / "run")
    folder = root / "run" / "model"
    lm = AutoModelForCausalLM.from_pretrained(folder)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(0)
        for parameter in lm.parameters():
            if parameter.dim() > 1:
                parameter.normal_(0.0, 0.3)
    lm.save_pretrained(folder)
    return Predictor(str(folder))


def user(content) -> list[dict]:
    return [{"role": "user", "content": content}]


def chat(url: str, messages: list[dict], **fields) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json={"messages": messages, **fields}, timeout=120)


def streamed_text(response: httpx.Response) -> tuple[str, list[dict]]:
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events
    chunks = [json.loads(e) for e in events[:-1]]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks), chunks


def alone(predictor: Predictor, messages: list[dict], max_new_tokens: int | None = None) -> str:
    """The answer of ``model.generate`` for this conversation by itself (no batch, no padding)."""
    from sft_core.engine.predictor import GenerationSettings

    examples = predictor.generation_examples(conversations=[messages])
    [prediction] = predictor._predict_static(examples, GenerationSettings(max_new_tokens=max_new_tokens), None, None)
    return predictor.task.prediction_text(prediction)


def in_threads(*calls) -> list:
    """Run each call on its own thread; returns a list that holds their results once joined."""
    results: list = [None] * len(calls)
    threads = [threading.Thread(target=lambda i=i, c=c: results.__setitem__(i, c()), daemon=True)
               for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    return results, threads


def queued(app, n: int) -> None:
    """Wait until ``n`` sequences wait for the paused batcher."""
    poll(lambda: len(app.state.model["generation"].batcher.waiting), lambda waiting: waiting == n)


def metric(url: str, name: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_streamed_and_whole_answers_share_the_batch_and_equal_one_request_at_a_time(predictor):
    with serving(predictor) as (url, app):
        wait_ready(url)
        batcher = app.state.model["generation"].batcher
        batcher.pause()
        results, threads = in_threads(*[lambda q=q, i=i: chat(url, user(q), stream=i % 2 == 1)
                                        for i, q in enumerate(QUESTIONS)])
        queued(app, len(QUESTIONS))
        batcher.resume()
        for thread in threads:
            thread.join(120)
        info = httpx.get(f"{url}/info").json()
    assert batcher.peak_rows == len(QUESTIONS)  # streams and whole answers in one running batch
    assert info["continuous_batching"] is True
    for i, (question, response) in enumerate(zip(QUESTIONS, results)):
        assert response.status_code == 200, response.text
        expected = alone(predictor, user(question))
        if i % 2:
            text, chunks = streamed_text(response)
            assert sum(1 for c in chunks if c["choices"][0]["delta"].get("content")) >= 2  # piece by piece
            assert text.strip() == expected and chunks[-1]["choices"][0]["finish_reason"] == "length"
        else:
            assert response.json()["choices"][0]["message"]["content"] == expected


def test_each_request_keeps_its_settings_inside_one_batch(predictor):
    question = QUESTIONS[0]
    with serving(predictor) as (url, app):
        wait_ready(url)
        batcher = app.state.model["generation"].batcher
        batcher.pause()
        results, threads = in_threads(
            lambda: chat(url, user(question), max_tokens=3),
            lambda: chat(url, user(question), temperature=1.0, seed=5, max_tokens=6),
            lambda: chat(url, user(question), max_tokens=8))
        queued(app, 3)
        batcher.resume()
        for thread in threads:
            thread.join(120)
        seeded_alone = chat(url, user(question), temperature=1.0, seed=5, max_tokens=6).json()
    short, seeded, full = (r.json() for r in results)
    assert batcher.peak_rows == 3
    assert short["usage"]["completion_tokens"] == 3 and short["choices"][0]["finish_reason"] == "length"
    assert short["choices"][0]["message"]["content"] == alone(predictor, user(question), 3)
    assert full["choices"][0]["message"]["content"] == alone(predictor, user(question), 8)
    # a seeded draw beside others equals the same draw alone, and is not the greedy answer
    assert seeded["choices"][0]["message"] == seeded_alone["choices"][0]["message"]
    assert seeded["choices"][0]["message"]["content"] != alone(predictor, user(question), 6)


def test_a_client_that_goes_away_frees_its_place_and_a_full_queue_answers_429(predictor):
    with serving(predictor, max_batch_size=1, max_queue=1) as (url, app):
        wait_ready(url)
        batcher = app.state.model["generation"].batcher
        batcher.pause()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={"messages": user("Why?"), "stream": True},
                          timeout=120) as stream:
            assert next(stream.iter_lines()).startswith("data: ")  # the stream has begun; then the client leaves
        with pytest.raises(httpx.ReadTimeout):  # a whole answer the client stops waiting for
            httpx.post(f"{url}/v1/chat/completions", json={"messages": user("Say yes.")}, timeout=1.0)
        # both left the queue at once, without a step of the (paused) batcher: one place is free
        poll(lambda: metric(url, 'sft_finished_sequences_total{reason="cancelled"}'), lambda n: n == 2)
        results, threads = in_threads(lambda: chat(url, user("Name a colour.")))
        queued(app, 1)
        full = chat(url, user("One more?"))
        batcher.resume()
        for thread in threads:
            thread.join(120)
        cancelled = metric(url, 'sft_finished_sequences_total{reason="cancelled"}')
    assert full.status_code == 429 and full.headers["retry-after"] and "sft serve" not in full.text
    assert "waiting" in full.json()["error"]["message"]
    assert cancelled == 2 and results[0].status_code == 200  # the two that went away never ran
    assert batcher.peak_rows == 1


def test_the_openai_client_streams_chats_with_text_parts_and_the_developer_role(predictor):
    openai = pytest.importorskip("openai")
    with serving(predictor) as (url, _):
        wait_ready(url)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        plain = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
        parts = [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                 {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]
        whole = client.chat.completions.create(model="m", messages=plain)
        pieces = [chunk.choices[0].delta.content or "" for chunk in
                  client.chat.completions.create(model="m", messages=parts, stream=True)]
        image = chat(url, [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])
    assert len([p for p in pieces if p]) >= 2 and "".join(pieces).strip() == whole.choices[0].message.content
    assert whole.choices[0].message.content == alone(predictor, plain)
    assert image.status_code == 422 and "messages" in image.json()["error"]["message"]


def test_usage_counts_the_rendered_prompt(predictor):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}]
    _, plan = predictor.plan_generation(predictor.generation_examples(conversations=[messages]))
    with serving(predictor) as (url, _):
        wait_ready(url)
        usage = chat(url, messages).json()["usage"]
        completion = httpx.post(f"{url}/v1/completions", json={"prompt": "Name a colour."}, timeout=120).json()
    content_tokens = sum(len(predictor.tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)
    assert usage["prompt_tokens"] == len(plan.prompts[0]) > content_tokens  # the template's tokens count
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    _, single = predictor.plan_generation(predictor.generation_examples(prompts=["Name a colour."]))
    assert completion["usage"]["prompt_tokens"] == len(single.prompts[0])


def test_bad_requests_get_a_clear_status_and_the_server_keeps_serving(predictor):
    limit = predictor.config.trainer.max_length
    with serving(predictor, max_request_bytes=10_000) as (url, _):
        wait_ready(url)
        route = f"{url}/v1/chat/completions"
        long = chat(url, user("colour " * (2 * limit)))
        malformed = httpx.post(route, content=b'{"messages": [', headers={"content-type": "application/json"})
        untyped = httpx.post(route, content=json.dumps({"messages": user("Why?")}).encode())
        empty_message = chat(url, user("   "))
        empty_prompt = httpx.post(f"{url}/v1/completions", json={"prompt": " "})
        fine = chat(url, user("Why?"))
    assert long.status_code == 400 and long.json()["error"]["code"] == "context_length_exceeded"
    assert f"context of {limit} tokens" in long.json()["error"]["message"]
    assert malformed.status_code == 400 and "not valid JSON" in malformed.json()["error"]["message"]
    assert untyped.status_code == 400 and "Content-Type: application/json" in untyped.json()["error"]["message"]
    assert empty_message.status_code == empty_prompt.status_code == 422
    assert "empty text" in empty_message.json()["error"]["message"] and "empty text" in empty_prompt.json()["error"]["message"]
    assert fine.status_code == 200


def test_a_body_over_the_limit_is_answered_413_to_a_client_still_sending(predictor):
    import urllib.error
    import urllib.request

    requests = pytest.importorskip("requests")
    body = json.dumps({"messages": user("x" * 3_000_000)}).encode()  # 300 times the limit
    with serving(predictor, max_request_bytes=10_000) as (url, _):
        wait_ready(url)
        answered = requests.post(f"{url}/v1/chat/completions", data=body, headers={"content-type": "application/json"},
                                 timeout=120)
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(urllib.request.Request(f"{url}/v1/chat/completions", data=body,
                                                          headers={"content-type": "application/json"}), timeout=120)
        after = chat(url, user("Why?"))
    assert answered.status_code == 413 and "max-request-bytes" in answered.text
    assert raised.value.code == 413
    assert after.status_code == 200


def test_the_drain_answers_503_to_what_cannot_finish_within_its_bound(predictor):
    with serving(predictor, drain_seconds=0.5) as (url, app):
        wait_ready(url)
        batcher = app.state.model["generation"].batcher
        batcher.pause()  # the generation cannot finish before the drain's bound
        results, threads = in_threads(lambda: chat(url, user("Why?")),
                                      lambda: chat(url, user("Say yes."), stream=True))
        queued(app, 2)
        app.state.drain()
        for thread in threads:
            thread.join(120)
        ready = httpx.get(f"{url}/ready")
        health = httpx.get(f"{url}/health")
    whole, streamed = results
    assert whole.status_code == 503 and whole.headers["retry-after"] and "retry" in whole.json()["error"]["message"]
    events = [line for line in streamed.text.splitlines() if line.startswith("data: ")]
    assert "shut down" in events[-1] and "[DONE]" not in streamed.text  # the stream ends with the error
    assert ready.status_code == 503 and health.status_code == 200


def test_sigterm_exits_after_the_drain_bound_even_with_a_request_that_never_ends(predictor):
    """A request whose body never completes cannot be answered: after ``--drain-seconds`` and the
    grace uvicorn gets, the process exits all the same (status 0), saying it drained."""
    import signal
    import socket
    import subprocess

    from helpers import sft, sft_env
    from test_serve import Lines, free_port

    port = free_port()
    process = subprocess.Popen([*sft.command, "serve", "--model", predictor.model_dir, "--port", str(port),
                                "--drain-seconds", "1"], env=sft_env(PYTHONUNBUFFERED="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Lines(process.stdout)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=120)
        assert chat(url, user("Why?")).status_code == 200
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"content-length: 1000\r\n\r\n{\"messages\": [")  # and never the rest
            process.send_signal(signal.SIGTERM)
            output.wait_for("draining: requests in flight have 1 s", timeout=120)
            process.wait(timeout=120)  # a hang fails here, not on a clock of the test's own
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.reader.join(timeout=30)
    assert process.returncode == 0, output.text()
