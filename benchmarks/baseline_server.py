"""The reference server for benchmarks/serve_load.py: an endpoint written the way people write one
without sft, FastAPI calling a transformers pipeline per request.

    python benchmarks/baseline_server.py --model runs/sst2/model --task text-classification --port 8100

It answers POST /predict {"inputs": [TEXT, ...]} with the pipeline's output and GET /health.
(No ``from __future__ import annotations``: FastAPI reads the request model's annotation at run time.)
"""


import argparse


def build_app(model: str, task: str):
    from fastapi import FastAPI
    from pydantic import BaseModel
    from transformers import pipeline

    kwargs = {"aggregation_strategy": "simple"} if task == "token-classification" else {}
    predictor = pipeline(task, model=model, tokenizer=model, device="cpu", **kwargs)
    app = FastAPI()

    class Request(BaseModel):
        inputs: list[str]

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.post("/predict")
    def predict(request: Request):  # a plain def: FastAPI runs it on its thread pool, one call per request
        out = predictor(request.inputs, truncation=True) if task == "text-classification" else predictor(request.inputs)
        return {"predictions": _plain(out)}

    return app


def _plain(value):
    """Pipeline outputs hold numpy floats; JSON wants Python ones."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model folder (RUN/model of sft run: a transformers folder)")
    parser.add_argument("--task", required=True, choices=["text-classification", "token-classification"])
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(build_app(args.model, args.task), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
