"""The HTTP stack's own limit for the gateway rows: FastAPI on uvicorn answering every
`POST /v1/events` with 202 after reading its body, doing nothing else (no auth, no checks,
no Kafka). `python -m bench.gateway_limit PORT` serves it until killed."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI, Request, Response

app = FastAPI()


@app.post("/v1/events")
async def events(request: Request) -> Response:
    await request.body()
    return Response(b'{"accepted":[]}', status_code=202, media_type="application/json")


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
