"""The REST transport floor: a raw ASGI app on uvicorn (httptools, uvloop) that reads the body and answers a
canned response (the bytes a real server returns for the same request) — what serving costs with no JSON,
no model and no framework."""

import argparse

import uvicorn

REPLY = b""
CALL = None  # --model: one model call per request, on the event loop (as the project's REST fast path runs it)


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    if CALL is not None:
        CALL()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REPLY)).encode())]})
    await send({"type": "http.response.body", "body": REPLY})


def main():
    global REPLY, CALL
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", required=True, help="file with the response body")
    p.add_argument("--model", help="a SavedModel version directory: one call of it per request (make profile)")
    args = p.parse_args()
    REPLY = open(args.reply, "rb").read()
    if args.model:
        from model_call import model_call

        CALL = model_call(args.model)
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
