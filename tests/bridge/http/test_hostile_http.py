"""Hostile input against the real HTTP companion (issue 11, items 11-14 and 16): every client
input gets a 4xx with the JSON error shape, never 500; stalled bodies are cut off; decoding stays
off the event loop; callers are limited one by one; keys protect every model route."""

from __future__ import annotations

import asyncio
import io
import json
import struct
import time
import zlib
from typing import Any

import aiohttp
import numpy as np
from aiohttp.test_utils import TestClient
from PIL import Image

from tests.bridge.http.conftest import FAST, data_uri, image_bytes

PNG = data_uri(image_bytes())


async def raw_http(client: TestClient, request: bytes, timeout_s: float = 10.0) -> tuple[int, dict[str, Any]]:
    """Send bytes exactly as given (aiohttp's client would refuse to write them) and read the reply."""
    url = client.make_url("/")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
    status = int(head.split(b" ", 2)[1])
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    body = await asyncio.wait_for(reader.readexactly(length), timeout_s)
    writer.close()
    return status, json.loads(body) if body.strip() else {}


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height (400 M pixels: over Pillow's own bomb limit) in 60 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def assert_json_error(status: int, body: dict[str, Any], expected: int) -> None:
    assert status == expected, (status, body)
    assert set(body["error"]) == {"code", "message", "retryable"}, body


def test_undecodable_headers_fields_deep_json_and_huge_ints_are_4xx(run: Any) -> None:
    async def body(client: TestClient) -> None:
        payload = json.dumps({"image_url": PNG, "object": "cube", "settings": FAST}).encode()
        request = (b"POST /v1/point HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                   b"X-Moondream-Auth: \xff\xfe\xc3(\r\nContent-Length: " + str(len(payload)).encode() + b"\r\n\r\n"
                   + payload)
        status, reply = await raw_http(client, request)
        assert_json_error(status, reply, 401)

        deep = b"[" * 100_000 + b"]" * 100_000
        resp = await client.post("/v1/caption", data=deep, headers={"Content-Type": "application/json",
                                                                       "X-Moondream-Auth": "k"})
        assert_json_error(resp.status, await resp.json(), 400)

        text = '{"image_url": "' + PNG + '", "force_torque": [' + "9" * 5000 + ', 0, 0, 0, 0, 0]}'
        resp = await client.post("/v1/act", data=text, headers={"Content-Type": "application/json",
                                                                 "X-Moondream-Auth": "k"})
        assert resp.status in (400, 422), await resp.text()
        assert "error" in await resp.json()
        big_float = '{"image_url": "' + PNG + '", "force_torque": [' + "9" * 400 + ', 0, 0, 0, 0, 0]}'
        resp = await client.post("/v1/act", data=big_float, headers={"Content-Type": "application/json",
                                                                      "X-Moondream-Auth": "k"})
        assert resp.status in (400, 422), await resp.text()

        form = aiohttp.FormData()
        form.add_field("image", image_bytes(), filename="i.png", content_type="image/png")
        form.add_field("force_torque", "9" * 5000)
        resp = await client.post("/predict", data=form, headers={"X-Moondream-Auth": "k"})
        assert resp.status == 422, await resp.text()

        boundary = b"b0undary"
        png = image_bytes()
        multipart = (
            b"--" + boundary + b"\r\nContent-Disposition: form-data; name=\"image\"; filename=\"i.png\"\r\n"
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + boundary +
            b"\r\nContent-Disposition: form-data; name=\"instruction\"\r\nContent-Type: text/plain; charset=utf-8"
            b"\r\n\r\n\xff\xfe\xc3(\r\n--" + boundary + b"--\r\n"
        )
        request = (b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Moondream-Auth: k\r\n"
                   b"Content-Type: multipart/form-data; boundary=" + boundary + b"\r\nContent-Length: "
                   + str(len(multipart)).encode() + b"\r\n\r\n" + multipart)
        status, reply = await raw_http(client, request)
        assert_json_error(status, reply, 400)

    run(body, api_keys=("k",))


def test_decompression_bomb_is_413_as_documented(run: Any) -> None:
    async def body(client: TestClient) -> None:
        resp = await client.post("/v1/caption", json={"image_url": data_uri(png_header(20000, 20000)),
                                                      "settings": FAST})
        assert_json_error(resp.status, await resp.json(), 413)

    run(body)


def test_stalled_bodies_are_answered_408_in_time(run: Any) -> None:
    async def body(client: TestClient) -> None:
        request = (b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100000\r\n\r\n{\"image_url\": ")
        t0 = time.perf_counter()
        results = await asyncio.gather(*(raw_http(client, request, timeout_s=10) for _ in range(20)))
        elapsed_s = time.perf_counter() - t0
        for status, reply in results:
            assert_json_error(status, reply, 408)
        assert elapsed_s < 5, elapsed_s
        resp = await client.get("/health")
        assert resp.status in (200, 503)

    run(body, body_read_timeout_s=1.0)


def test_tactile_decoding_does_not_stall_the_event_loop(run: Any) -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (2048, 2048, 3), dtype=np.uint8)).save(buf, format="PNG")
    tactile = data_uri(buf.getvalue())

    async def body(client: TestClient) -> None:
        async def health_latency_s() -> float:
            t0 = time.perf_counter()
            await (await client.get("/health")).read()
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        act = asyncio.create_task(client.post("/v1/act", json={"image_url": PNG, "tactile_image_url": tactile}))
        await asyncio.sleep(0.05)
        latencies = []
        while not act.done():
            latencies.append(await health_latency_s())
            await asyncio.sleep(0.01)
        act_s = time.perf_counter() - t0
        resp = act.result()
        assert resp.status in (200, 400), await resp.text()
        # while the 2048x2048 PNG decoded (and the act ran), /health kept answering promptly
        assert latencies and sorted(latencies)[len(latencies) // 2] < max(0.1, act_s / 4), (latencies, act_s)

    run(body)


def test_many_callers_are_served_and_each_caller_is_limited(run: Any) -> None:
    async def body(client: TestClient) -> None:
        payload = {"image_url": PNG}
        # 150 concurrent /v1/act from 150 callers (keys): the companion's allowance at the server
        # covers them (before: 86 of 150 were 503 at the server's per-client limit of 64)
        resps = await asyncio.gather(*(
            client.post("/v1/act", json=payload, headers={"X-Moondream-Auth": f"k{i % 150}"}) for i in range(150)
        ))
        statuses = [r.status for r in resps]
        assert statuses.count(200) == 150, statuses
        # one caller alone: limited to max_inflight_per_caller in flight, 429 beyond (retryable)
        resps = await asyncio.gather(*(
            client.post("/v1/act", json=payload, headers={"X-Moondream-Auth": "k0"}) for _ in range(20)
        ))
        limited = [r for r in resps if r.status == 429]
        assert limited and all(r.status in (200, 429) for r in resps)
        reply = await limited[0].json()
        assert reply["error"]["code"] == "too_many_requests" and reply["error"]["retryable"] is True
        assert limited[0].headers["Retry-After"]

    run(body, api_keys=tuple(f"k{i}" for i in range(150)), max_inflight_per_caller=4)


def test_keys_protect_predict_by_default_and_open_predict_opens_it(run: Any) -> None:
    def form() -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("image", image_bytes(), filename="i.png", content_type="image/png")
        return data

    async def protected(client: TestClient) -> None:
        resp = await client.post("/predict", data=form())
        assert_json_error(resp.status, await resp.json(), 401)
        resp = await client.post("/predict", data=form(), headers={"X-Moondream-Auth": "k"})
        assert resp.status == 200, await resp.text()

    async def opened(client: TestClient) -> None:
        resp = await client.post("/predict", data=form())
        assert resp.status == 200, await resp.text()
        resp = await client.post("/v1/act", json={"image_url": PNG})
        assert_json_error(resp.status, await resp.json(), 401)  # only /predict is opened

    run(protected, api_keys=("k",))
    run(opened, api_keys=("k",), open_predict=True)
