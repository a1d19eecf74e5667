"""The REST transport floor: a raw ASGI app on uvicorn (httptools, uvloop) that reads the body and answers a
canned response (the bytes a real server returns for the same request) — what serving costs with no JSON,
no model and no framework."""

import argparse

import uvicorn

REPLY = b""


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REPLY)).encode())]})
    await send({"type": "http.response.body", "body": REPLY})


def main():
    global REPLY
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--reply", required=True, help="file with the response body")
    args = p.parse_args()
    REPLY = open(args.reply, "rb").read()
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools", log_level="warning",
                access_log=False, lifespan="off")


if __name__ == "__main__":
    main()
