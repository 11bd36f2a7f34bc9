"""``sft serve``: every route, dynamic batching under concurrency, each bad input's status code, the
OpenAI-style routes with streaming, and SIGTERM drain. Tiny models, loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")

from sft_core import engine  # noqa: E402
from sft_core.host.manager import PluginHost  # noqa: E402
from sft_core.engine.predictor import Predictor  # noqa: E402
from sft_core.commands.serve.app import ServeSettings, create_app  # noqa: E402
from sft_core.testing import Case, _same, build_tiny_model, example_texts, run_engine, tiny_decoder  # noqa: E402

from helpers import sft, sft_env  # noqa: E402
from test_translation import TINY as TINY_MARIAN  # noqa: E402

CLASSIFICATION = ["a gripping, funny film", "dull and lifeless", "the best film of the year", "boring"]
INPUTS = {
    "classification": CLASSIFICATION,
    "ner": ["Anna flew to Paris on Monday", "Boris works in Berlin"],
    "qa": [{"question": "Where does Boris work?", "context": "Boris works in Berlin for a bank."},
           {"question": "Who flew?", "context": "Anna flew to Paris on Monday."}],
    "translation": ["The dog runs in the park.", "A cat."],
    "instruct": ["What is the capital of France?", "Name a colour."],
}


def tiny_llama(folder, examples):
    return tiny_decoder(folder, example_texts(examples), family="llama")


CASES = {
    "classification": Case("classification"),
    "ner": Case("ner"),
    "qa": Case("qa"),
    "translation": Case("translation", overrides={**TINY_MARIAN, "translation.num_beams": 1}),
    "instruct": Case("instruct", tiny_model=tiny_llama,
                     overrides={"instruct.chat_template": "chatml", "instruct.max_new_tokens": 8, "peft.method": "none",
                                "trainer.max_length": 128}),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A model folder written by a short `sft run` of each built-in task."""
    folders = {}
    for task, case in CASES.items():
        root = tmp_path_factory.mktemp(f"serve-{task}")
        model = "scratch" if task == "translation" else build_tiny_model(case, root / "tiny")
        run_engine(case, model, root / "run")
        folders[task] = root / "run" / "model"
    return folders


@contextlib.contextmanager
def serving(predictor_or_loader, **settings):
    """The app of a predictor (or of a function returning one; or an ASGI app as it is) on a real
    uvicorn server on 127.0.0.1 (a free port), in a thread; yields its base URL and the app."""
    import uvicorn

    given = hasattr(predictor_or_loader, "router")  # already an app (e.g. the benchmark's baseline)
    app = predictor_or_loader if given else create_app(predictor_or_loader, ServeSettings(**settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/ready").status_code == 200:
                return
        time.sleep(0.05)
    raise AssertionError("the server never became ready")


def poll(get, until, timeout: float = 60):
    """What ``get()`` returns once ``until`` holds for it: a bounded wait for a state, not for a time."""
    deadline = time.time() + timeout
    while not until(answer := get()):
        assert time.time() < deadline, f"still {answer!r} after {timeout} s"
        time.sleep(0.05)
    return answer


@pytest.fixture(scope="module")
def classifier(models):
    return Predictor(str(models["classification"]))


# --- /predict equals `sft predict`, for every built-in task -----------------------------------

@pytest.mark.parametrize("task", list(CASES))
def test_predict_route_answers_what_sft_predict_prints(models, task):
    model = str(models[task])
    inputs = INPUTS[task]
    if task == "qa":
        fields = {name: [record[name] for record in inputs] for name in ("question", "context")}
        expected = engine.predict_saved(model, [], None, PluginHost(), fields=fields)
    else:
        expected = engine.predict_saved(model, list(inputs), None, PluginHost())
    with serving(Predictor(model)) as (url, _):
        response = httpx.post(f"{url}/predict", json={"inputs": inputs}, timeout=60)
    assert response.status_code == 200, response.text
    got = response.json()["predictions"]
    assert _same(got, expected) is None, _same(got, expected)


def test_concurrent_requests_are_batched_and_each_gets_its_own_result(classifier):
    texts = [f"{CLASSIFICATION[i % 4]} {'and more ' * (i % 5)}".strip() for i in range(40)]
    sequential = [classifier.predict([t])[0] for t in texts]

    async def fire(url):
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(client.post(f"{url}/predict", json={"inputs": [t]}) for t in texts))

    with serving(classifier, max_batch_size=16, max_wait_ms=50) as (url, _):
        responses = asyncio.run(fire(url))
        metrics = httpx.get(f"{url}/metrics").text
    assert [r.status_code for r in responses] == [200] * len(texts)
    for response, text, alone in zip(responses, texts, sequential):
        (got,) = response.json()["predictions"]
        assert got["text"] == text and got["prediction"] == alone["prediction"]
        assert got["score"] == pytest.approx(alone["score"], abs=1e-4)
    count = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("sft_batch_size_count")))
    assert 1 <= count < len(texts)  # some requests shared a model call
    assert f'sft_requests_total{{route="/predict",status="200"}} {float(len(texts))}' in metrics


# --- health, readiness, info, metrics ----------------------------------------------------------

def test_ready_is_503_while_the_model_loads_and_health_answers(classifier):
    release = threading.Event()

    def load():
        release.wait(30)
        return classifier

    with serving(load) as (url, _):
        assert httpx.get(f"{url}/health").json() == {"status": "ok"}
        loading = httpx.get(f"{url}/ready")
        assert loading.status_code == 503 and loading.headers["retry-after"] == "1"
        assert httpx.post(f"{url}/predict", json={"inputs": ["x"]}).status_code == 503
        release.set()
        wait_ready(url)
        info = httpx.get(f"{url}/info").json()
    assert info["task"] == "classification" and info["backend"] == "pytorch" and info["generative"] is False
    assert info["labels"] == classifier.task.state_dict()["labels"] and info["limits"]["max_batch_size"] == 32
    assert info["versions"]["sft"]


def test_a_model_that_fails_to_load_is_reported_by_ready(tmp_path):
    def load():
        raise RuntimeError("weights are corrupt")

    with serving(load) as (url, _):
        ready = poll(lambda: httpx.get(f"{url}/ready"), until=lambda r: "failed to load" in r.text)
        assert httpx.get(f"{url}/health").status_code == 200
    assert ready.status_code == 503 and "weights are corrupt" in ready.text


def test_metrics_are_prometheus_text(classifier):
    with serving(classifier) as (url, _):
        httpx.post(f"{url}/predict", json={"inputs": CLASSIFICATION})
        response = httpx.get(f"{url}/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    for name in ("sft_requests_total", "sft_request_seconds_bucket", "sft_batch_size_bucket", "sft_queue_depth",
                 "sft_inputs_total"):
        assert name in text, name
    assert "sft_inputs_total 4.0" in text


# --- bad input: the right status code, and the server keeps serving ---------------------------

def test_each_bad_input_gets_its_status_code_and_the_server_keeps_serving(classifier):
    with serving(classifier, max_request_bytes=10_000) as (url, _):
        cases = [
            (httpx.post(f"{url}/predict", content=b"{not json", headers={"content-type": "application/json"}), 400,
             "not valid JSON"),
            (httpx.post(f"{url}/predict", content=b'{"inputs": ["x"]}'), 400, "Content-Type: application/json"),
            (httpx.post(f"{url}/predict", json={"texts": ["x"]}), 422, "inputs"),
            (httpx.post(f"{url}/predict", json={"inputs": [3]}), 422, "inputs"),
            (httpx.post(f"{url}/predict", json={"inputs": []}), 422, "inputs"),
            (httpx.post(f"{url}/predict", json={"inputs": ["x"], "extra": 1}), 422, "extra"),
            (httpx.post(f"{url}/predict", json={"inputs": [{"question": "q", "context": "c"}]}), 422, "takes texts"),
            (httpx.post(f"{url}/predict", json={"inputs": ["word " * 5000]}), 413, "max-request-bytes"),
            (httpx.get(f"{url}/nowhere"), 404, "Not Found"),
        ]
        for response, status, says in cases:
            assert response.status_code == status, (status, response.text)
            assert says in response.text, (says, response.text)
            assert httpx.get(f"{url}/health").status_code == 200
        assert httpx.post(f"{url}/predict", json={"inputs": ["fine"]}).status_code == 200


def test_a_long_input_is_truncated_and_flagged_or_rejected_by_option(classifier):
    long_text = "a gripping film " * 200
    limit = classifier.config.trainer.max_length
    with serving(classifier) as (url, _):
        flagged = httpx.post(f"{url}/predict", json={"inputs": [long_text, "short"]}).json()["predictions"]
    assert flagged[0]["truncated"] is True and "truncated" not in flagged[1]
    assert flagged[0]["prediction"] == classifier.predict([long_text])[0]["prediction"]
    with serving(classifier, long_inputs="reject") as (url, _):
        rejected = httpx.post(f"{url}/predict", json={"inputs": ["short", long_text]})
        assert httpx.get(f"{url}/health").status_code == 200
    assert rejected.status_code == 413 and "inputs[1]" in rejected.text and f"over the model's {limit}" in rejected.text


def test_a_full_queue_answers_429_with_retry_after(classifier):
    started, release = threading.Event(), threading.Event()
    original = classifier.predict_examples

    def slow(examples, *args, **kwargs):
        started.set()
        release.wait(30)
        return original(examples, *args, **kwargs)

    async def scenario(url, batcher):
        async with httpx.AsyncClient(timeout=60) as client:
            first = asyncio.ensure_future(client.post(f"{url}/predict", json={"inputs": ["one", "two"]}))
            await asyncio.get_running_loop().run_in_executor(None, started.wait, 30)
            queued = asyncio.ensure_future(client.post(f"{url}/predict", json={"inputs": ["three", "four"]}))
            for _ in range(500):  # until the second request waits in the queue
                if batcher.queued == 2:
                    break
                await asyncio.sleep(0.02)
            refused = await client.post(f"{url}/predict", json={"inputs": ["five"]})
            release.set()
            return await first, await queued, refused

    classifier.predict_examples = slow
    try:
        with serving(classifier, max_queue=2, max_wait_ms=0) as (url, app):
            first, queued, refused = asyncio.run(scenario(url, app.state.batcher))
            assert httpx.get(f"{url}/health").status_code == 200
    finally:
        del classifier.predict_examples
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert first.status_code == 200 and queued.status_code == 200


def test_an_exception_in_inference_fails_that_batch_only(classifier):
    calls = {"n": 0}
    original = classifier.predict_examples

    def flaky(examples, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("CUDA error: device-side assert")
        return original(examples, *args, **kwargs)

    classifier.predict_examples = flaky
    try:
        with serving(classifier) as (url, _):
            failed = httpx.post(f"{url}/predict", json={"inputs": ["x"]})
            after = httpx.post(f"{url}/predict", json={"inputs": ["x"]})
    finally:
        del classifier.predict_examples
    assert failed.status_code == 500 and "device-side assert" in failed.text
    assert after.status_code == 200


# --- OpenAI-style routes -----------------------------------------------------------------------

def sse(response) -> list:
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]", events
    return [json.loads(e) for e in events[:-1]]


def test_completions_of_a_translation_model_equal_sft_predict(models):
    model = str(models["translation"])
    expected = [r["translation"] for r in engine.predict_saved(model, INPUTS["translation"], None, PluginHost())]
    with serving(Predictor(model)) as (url, _):
        body = httpx.post(f"{url}/v1/completions", json={"model": "m", "prompt": INPUTS["translation"]}, timeout=60).json()
        chat = httpx.post(f"{url}/v1/chat/completions",
                          json={"messages": [{"role": "user", "content": INPUTS["translation"][0]}]}, timeout=60).json()
        models_list = httpx.get(f"{url}/v1/models").json()
    assert body["object"] == "text_completion" and [c["text"] for c in body["choices"]] == expected
    assert {c["finish_reason"] for c in body["choices"]} <= {"stop", "length"} and body["usage"]["total_tokens"] > 0
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": expected[0]}
    assert models_list["data"][0]["id"] == "run"  # RUN/model is named after its run folder


def test_chat_completions_apply_the_saved_template_and_stream_tokens(models):
    model = str(models["instruct"])
    predictor = Predictor(model)
    question = INPUTS["instruct"][0]
    expected = predictor.predict([question])[0]["generation"]
    (generated,) = predictor.generate(prompts=[question])
    assert generated["text"] == expected and generated["finish_reason"] in ("stop", "length") and generated["tokens"] > 0
    messages = [{"role": "user", "content": question}]
    with serving(predictor) as (url, _):
        whole = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages}, timeout=60).json()
        streamed = httpx.post(f"{url}/v1/chat/completions", json={"messages": messages, "stream": True}, timeout=60)
        completion = httpx.post(f"{url}/v1/completions", json={"prompt": question, "stream": True}, timeout=60)
        limited = httpx.post(f"{url}/v1/completions", json={"prompt": question, "max_tokens": 2}, timeout=60).json()
        bad = [httpx.post(f"{url}/v1/chat/completions", json=body) for body in (
            {"messages": []}, {"messages": [{"role": "user"}]}, {"messages": [{"role": "robot", "content": "x"}]},
            {"messages": messages, "n": 2}, {"messages": [{"role": "assistant", "content": "x"}]})]
        assert httpx.get(f"{url}/health").status_code == 200
    assert whole["object"] == "chat.completion" and whole["choices"][0]["message"]["content"] == expected
    assert streamed.headers["content-type"].startswith("text/event-stream")
    chunks = sse(streamed)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks[1:]]
    assert sum(1 for p in pieces if p) >= 2  # the answer arrives in several pieces
    assert "".join(pieces).strip() == expected and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    text = "".join(c["choices"][0]["text"] for c in sse(completion))
    assert text.strip() == expected
    assert limited["choices"][0]["finish_reason"] == "length"
    # two tokens generated (counted as generated, not by re-tokenizing the text), the start of the whole answer
    assert limited["usage"]["completion_tokens"] == 2 and expected.startswith(limited["choices"][0]["text"])
    assert [r.status_code for r in bad] == [422] * len(bad)
    assert all("error" in r.json() and r.json()["error"]["message"] for r in bad)


def test_openai_routes_are_404_for_a_task_that_does_not_generate(classifier):
    with serving(classifier) as (url, _):
        response = httpx.post(f"{url}/v1/completions", json={"prompt": "x"})
    assert response.status_code == 404 and "does not generate" in response.json()["error"]["message"]


# --- the command: loopback by default, SIGTERM drains ------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lines:
    """The lines a process writes, read on a thread; ``wait_for(text)`` waits until one contains ``text``."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.ended = False
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.reader.start()

    def _read(self, stream) -> None:
        for line in stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float) -> None:
        with self.changed:
            found = self.changed.wait_for(lambda: self.ended or any(text in line for line in self.lines), timeout)
            assert found and any(text in line for line in self.lines), f"no {text!r} in:\n{self.text()}"

    def text(self) -> str:
        return "".join(self.lines)


def test_sigterm_drains_in_flight_requests_and_exits_0(models):
    """A request whose body is still arriving when SIGTERM comes is answered in full, then the server
    exits with 0. The test holds the request in flight itself (``Expect: 100-continue``, the body sent
    only once the server says it is draining), so the outcome does not depend on the machine's speed."""
    import h11

    port = free_port()
    process = subprocess.Popen([*sft.command, "serve", "--model", str(models["classification"]), "--port", str(port),
                                "--drain-seconds", "600"],  # the drain waits for the test, not for a clock
                               env=sft_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    output = Lines(process.stdout)
    url = f"http://127.0.0.1:{port}"
    inputs = [f"{CLASSIFICATION[i % 4]} number {i}" for i in range(40)]
    body = json.dumps({"inputs": inputs}).encode()
    client = h11.Connection(h11.CLIENT)

    def next_event(sock):
        while (event := client.next_event()) is h11.NEED_DATA:
            client.receive_data(sock.recv(65536))
        return event

    try:
        wait_ready(url, timeout=120)
        with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:  # timeouts only against hangs
            sock.sendall(client.send(h11.Request(method="POST", target="/predict", headers=[
                ("host", f"127.0.0.1:{port}"), ("content-type", "application/json"),
                ("content-length", str(len(body))), ("expect", "100-continue")])))
            # 100 Continue: the server has the request and its handler waits for the body
            continued = next_event(sock)
            assert isinstance(continued, h11.InformationalResponse) and continued.status_code == 100, continued
            sock.sendall(client.send(h11.Data(data=body[:len(body) // 2])))
            process.send_signal(signal.SIGTERM)
            output.wait_for("Waiting for connections to close", timeout=120)  # draining, our request in flight
            sock.sendall(client.send(h11.Data(data=body[len(body) // 2:])) + client.send(h11.EndOfMessage()))
            response = next_event(sock)
            received = b""
            while not isinstance(event := next_event(sock), h11.EndOfMessage):
                received += bytes(event.data)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.reader.join(timeout=30)
    log = output.text()
    assert process.returncode == 0, log
    assert isinstance(response, h11.Response) and response.status_code == 200, (response, received, log)
    predictions = json.loads(received)["predictions"]
    assert [p["text"] for p in predictions] == inputs and all(p["prediction"] for p in predictions)
    assert "Uvicorn running on http://127.0.0.1:" in log  # bound to loopback unless told otherwise
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health")


def test_the_openai_client_works_against_it(models):
    """The official client, unchanged, for a translation model: completions, chat, and a stream."""
    openai = pytest.importorskip("openai")
    model = str(models["translation"])
    expected = [r["translation"] for r in engine.predict_saved(model, INPUTS["translation"], None, PluginHost())]
    with serving(Predictor(model)) as (url, _):
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        completion = client.completions.create(model="model", prompt=INPUTS["translation"][0])
        chat = client.chat.completions.create(model="model",
                                              messages=[{"role": "user", "content": INPUTS["translation"][0]}])
        pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="model", messages=[{"role": "user", "content": INPUTS["translation"][1]}], stream=True)]
        listed = [m.id for m in client.models.list()]
        with pytest.raises(openai.UnprocessableEntityError):
            client.completions.create(model="model", prompt=INPUTS["translation"][0], n=3)
    assert completion.choices[0].text == expected[0]
    assert chat.choices[0].message.content == expected[0]
    assert "".join(pieces).strip() and listed == ["run"]
