"""A plain hand-written FastAPI `:predict` endpoint (row format, one input), the benchmark's REST peer."""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402

app = FastAPI()
MODELS: dict = {}


@app.post("/v1/models/{name}:predict")
async def predict(name: str, request: Request):
    body = await request.json()
    fn = MODELS[name].signatures[body.get("signature_name") or "serving_default"]
    (arg,) = fn.structured_input_signature[1]
    key = "instances" if "instances" in body else "inputs"
    out = fn(**{arg: tf.constant(body[key], dtype=tf.float32)})
    values = [v.numpy().tolist() for v in out.values()]
    return {"predictions" if key == "instances" else "outputs": values[0]}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", action="append", required=True, help="NAME=SAVEDMODEL_DIR")
    args = p.parse_args()
    for m in args.model:
        name, path = m.split("=")
        MODELS[name] = tf.saved_model.load(path)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
