"""The inference server: one ROUTER socket, one I/O thread, one inference loop.

The I/O thread only reads, decodes, validates, admits and sends. JPEG/PNG decoding runs in a
small worker pool. ``hello``, ``health`` and ``stats`` are answered by the I/O thread from facts
the loop published at load time, so they stay fast while the models are busy.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import zmq

import bridge
from bridge.codec import Buffer, decode_header, encode_message, peek_header
from bridge.config import BridgeConfig
from bridge.image_args import ImageLimits, contains_encoded_image
from bridge.inference_loop import GeneratorLoader, InferenceLoop, PolicyLoader
from bridge.parsing import RequestHead, parse_act, parse_generation, parse_head, parse_session, readable_id
from bridge.protocol import (
    GENERATION_OPS,
    OP_ACT,
    OP_HEALTH,
    OP_HELLO,
    OP_RESET,
    OP_STATS,
    SUPPORTED_VERSIONS,
    ErrorCode,
    ProtocolError,
    error_header,
    success_header,
)
from bridge.work import ClientKey, Outbox, Work
from models import model_kinds

logger = logging.getLogger(__name__)

_HARD_FRAME_FACTOR = 2  # frames over 2x the message limit make ZeroMQ drop the connection outright


class InferenceServer:
    def __init__(
        self,
        config: BridgeConfig,
        *,
        load_policy: PolicyLoader = model_kinds.load_policy,
        load_generator: GeneratorLoader = model_kinds.load_generator,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.config = config
        self._context = context or zmq.Context()
        self._own_context = context is None
        self.outbox = Outbox(config.server.frame_threshold_bytes)
        self.loop = InferenceLoop(config, self.outbox, load_policy, load_generator)
        self._limits = ImageLimits(
            config.limits.max_image_width, config.limits.max_image_height, config.limits.max_image_pixels
        )
        self._decoders = ThreadPoolExecutor(config.server.decode_workers, thread_name_prefix="image-decode")
        self._inflight: Counter[ClientKey] = Counter()
        self._inflight_total = 0
        self._keys = itertools.count(1)  # generation request keys, unique per server
        self._started_s = time.monotonic()
        self._stop_requested = threading.Event()
        self._bound = threading.Event()
        self._bind_error: BaseException | None = None
        self.endpoint = config.server.bind
        self._served_ops = self._ops_for(config)
        self._io = threading.Thread(target=self._io_main, name="router-io", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._io.start()
        self._bound.wait()
        if self._bind_error is not None:
            raise self._bind_error
        self.loop.start()

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until the models are loaded (or failed to load); True when status is ok."""
        self.loop.wait_loaded(timeout_s)
        return self.loop.state.status == "ok"

    def stop(self) -> None:
        """Answer or fail in-flight work (within ``shutdown_grace_s``), then close the socket."""
        if self._stop_requested.is_set():
            return
        logger.info("stopping: finishing %d in-flight requests", self._inflight_total)
        self.loop.stop(self.config.server.shutdown_grace_s)
        self.loop.join(self.config.server.shutdown_grace_s + 5.0)
        self._stop_requested.set()
        self._io.join(5.0)
        self._decoders.shutdown(wait=False, cancel_futures=True)
        self.outbox.close()
        if self._own_context:
            self._context.term()
        logger.info("stopped")

    def __enter__(self) -> InferenceServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def queue_depth(self) -> int:
        return self._inflight_total

    # ------------------------------------------------------------------ I/O thread

    def _io_main(self) -> None:
        sock = self._context.socket(zmq.ROUTER)
        try:
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, self.config.server.max_message_bytes * _HARD_FRAME_FACTOR)
            sock.bind(self.config.server.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except BaseException as exc:
            self._bind_error = exc
            sock.close(linger=0)
            self._bound.set()
            return
        self._bound.set()
        logger.info("listening on %s", self.endpoint)
        poller = zmq.Poller()
        poller.register(sock, zmq.POLLIN)
        poller.register(self.outbox.wake_fd, zmq.POLLIN)
        try:
            while not (self._stop_requested.is_set() and not self.loop.alive):
                events = dict(poller.poll(100))
                if sock in events:
                    for _ in range(256):  # bounded burst, then give replies their turn
                        try:
                            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._on_message(sock, frames)
                self._flush(sock)
            self._flush(sock)
        finally:
            sock.close(linger=0)

    def _flush(self, sock: zmq.Socket[Any]) -> None:
        for out in self.outbox.drain():
            if out.final:
                self._release(out.client)
            self._send(sock, out.frames)

    def _send(self, sock: zmq.Socket[Any], frames: list[Buffer]) -> None:
        try:
            sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
        except zmq.ZMQError as exc:  # peer gone (EHOSTUNREACH) or its queue full (EAGAIN)
            logger.debug("reply dropped: %s", exc)

    def _release(self, client: ClientKey) -> None:
        self._inflight_total -= 1
        self._inflight[client] -= 1
        if self._inflight[client] <= 0:
            del self._inflight[client]

    def _reply_error(self, sock: zmq.Socket[Any], envelope: list[bytes], rid: Any, exc: ProtocolError) -> None:
        frames = encode_message(error_header(rid, exc.code, exc.message))
        self._send(sock, [*envelope, b"", *frames])

    def _on_message(self, sock: zmq.Socket[Any], frames: list[zmq.Frame]) -> None:
        received_s = time.perf_counter()
        split = next((i for i, f in enumerate(frames) if len(f) == 0), None)
        if split is None or split == 0:
            # no delimiter: answer the sender (first identity) so a buggy DEALER learns why
            envelope: list[bytes] = [frames[0].bytes]
            self._reply_error(
                sock,
                envelope,
                None,
                ProtocolError(ErrorCode.BAD_REQUEST, "message has no empty delimiter frame before the header"),
            )
            return
        envelope = [f.bytes for f in frames[:split]]
        body = frames[split + 1 :]
        if not body:
            self._reply_error(sock, envelope, None, ProtocolError(ErrorCode.BAD_REQUEST, "message has no header frame"))
            return
        size = sum(len(f) for f in body)
        header: Any = None
        try:
            if size > self.config.server.max_message_bytes:
                raise ProtocolError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"message is {size} bytes, limit {self.config.server.max_message_bytes}",
                )
            header = decode_header(body[0].buffer, [f.buffer for f in body[1:]], self.config.limits.max_array_bytes)
            head = parse_head(
                header, self.config.server.auth_tokens, self._served_ops, self.config.limits.max_deadline_ms
            )
            self._dispatch(sock, envelope, head, received_s)
        except ProtocolError as exc:
            if header is None and size <= self.config.server.max_message_bytes:
                header = peek_header(body[0].buffer)
            self._reply_error(sock, envelope, readable_id(header), exc)
        except Exception:  # never let one request take the I/O thread down
            logger.exception("unexpected error handling a request")
            self._reply_error(
                sock, envelope, readable_id(header), ProtocolError(ErrorCode.INTERNAL, "unexpected server error")
            )

    @staticmethod
    def _ops_for(config: BridgeConfig) -> frozenset[str]:
        ops = {OP_HELLO, OP_HEALTH, OP_STATS, OP_RESET, OP_ACT}
        if config.vlm.enabled:
            ops.update(GENERATION_OPS)
        return frozenset(ops)

    def _dispatch(self, sock: zmq.Socket[Any], envelope: list[bytes], head: RequestHead, received_s: float) -> None:
        if head.op in (OP_HELLO, OP_HEALTH, OP_STATS):
            result = {OP_HELLO: self._hello, OP_HEALTH: self._health, OP_STATS: self._stats}[head.op]()
            elapsed_ms = (time.perf_counter() - received_s) * 1000.0
            timing = {"queue_ms": 0.0, "compute_ms": 0.0, "server_ms": elapsed_ms, "batch_size": 1}
            threshold = None if head.inline_arrays else self.config.server.frame_threshold_bytes
            reply = encode_message(success_header(head.request_id, result, timing), threshold)
            self._send(sock, [*envelope, b"", *reply])
            return
        if self._stop_requested.is_set() or self.loop.state.status == "stopping":
            raise ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "the server is shutting down")
        self._check_model(head.op)
        client: ClientKey = tuple(envelope)
        if self._inflight_total >= self.config.server.max_inflight:
            raise ProtocolError(ErrorCode.OVERLOADED, f"server queue is full ({self._inflight_total} requests)")
        if self._inflight[client] >= self.config.server.max_inflight_per_client:
            raise ProtocolError(
                ErrorCode.OVERLOADED,
                f"this client has {self._inflight[client]} requests in flight, "
                f"limit {self.config.server.max_inflight_per_client}",
            )
        deadline_s = received_s + head.deadline_ms / 1000.0 if head.deadline_ms is not None else None
        work = Work(envelope, client, head.request_id, head.op, received_s, deadline_s)
        work.inline_arrays = head.inline_arrays
        self._inflight_total += 1
        self._inflight[client] += 1
        key = next(self._keys)
        if head.op in GENERATION_OPS or contains_encoded_image(head.args):
            self._decoders.submit(self._prepare_and_submit, work, head.args, key)
        else:
            self._prepare_and_submit(work, head.args, key)

    def _check_model(self, op: str) -> None:
        state = self.loop.state
        if state.status == "loading":
            raise ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "models are still loading")
        if op == OP_ACT and state.policy is None:
            raise ProtocolError(
                ErrorCode.MODEL_UNAVAILABLE, f"no policy is loaded ({state.detail or 'not configured'})"
            )
        if op in GENERATION_OPS and (state.vlm is None or op not in state.vlm.skills):
            raise ProtocolError(ErrorCode.MODEL_UNAVAILABLE, f"no model serving {op!r} is loaded")

    def _prepare_and_submit(self, work: Work, args: Mapping[str, Any], key: int) -> None:
        """Parse op arguments into the payload: in the I/O thread for ``act`` with raw arrays, in a
        decode worker for JPEG/PNG and for generation requests (whose crops are made there too)."""
        try:
            if work.op == OP_ACT:
                assert self.loop.state.policy is not None
                cameras = self.loop.state.policy.description.get("cameras") or ["primary"]
                work.payload = parse_act(args, cameras[0], self._limits, self.config.limits.max_instruction_chars)
            elif work.op == OP_RESET:
                work.payload = parse_session(args)
            else:
                request = parse_generation(work.op, key, args, self._limits)
                generator = self.loop.generator
                work.payload = generator.prepare(request) if generator is not None else request
        except Exception as exc:
            self.outbox.fail(work, exc, "parsing")
            return
        self.loop.submit(work)

    # ------------------------------------------------------------------ control ops

    def _hello(self) -> dict[str, Any]:
        state = self.loop.state
        models = {
            m.info.name: {**m.description, "kind": m.info.kind, "random_weights": m.info.random_weights}
            for m in (state.policy, state.vlm)
            if m is not None
        }
        limits = self.config.limits
        return {
            "protocol": list(SUPPORTED_VERSIONS),
            "server": {"name": self.config.server.name, "version": bridge.__version__},
            "ops": sorted(self._served_ops),
            "models": models,
            "limits": {
                "max_message_bytes": self.config.server.max_message_bytes,
                "max_array_bytes": limits.max_array_bytes,
                "max_image_width": limits.max_image_width,
                "max_image_height": limits.max_image_height,
                "max_image_pixels": limits.max_image_pixels,
                "max_instruction_chars": limits.max_instruction_chars,
                "max_batch": self.config.batching.max_batch,
                "max_inflight": self.config.server.max_inflight,
                "max_inflight_per_client": self.config.server.max_inflight_per_client,
            },
            "auth": "token" if self.config.server.auth_tokens else "none",
        }

    def _health(self) -> dict[str, Any]:
        state = self.loop.state
        models: dict[str, Any] = {}
        for role, spec_kind, loaded in (
            ("policy", self.config.policy.kind, state.policy),
            ("vlm", self.config.vlm.kind, state.vlm),
        ):
            if role == "vlm" and not self.config.vlm.enabled:
                continue
            if loaded is None:
                models[spec_kind] = {"loaded": False, "role": role}
            else:
                info = loaded.info
                models[info.name] = {
                    "loaded": True,
                    "role": role,
                    "kind": info.kind,
                    "random_weights": info.random_weights,
                    "parameters": info.parameters,
                    "device": info.device,
                    "dtype": info.dtype,
                    "source": info.source,
                }
        status = state.status
        if status == "ok" and not self.loop.alive:
            status = "degraded"
        result = {
            "status": status,
            "models": models,
            "device": state.device,
            "dtype": state.dtype,
            "cuda_available": state.cuda_available,
            "gpu_memory_gb": state.gpu_memory_gb,
            "queue_depth": self._inflight_total,
            "uptime_s": time.monotonic() - self._started_s,
            "counters": dict(state.counters),
        }
        if state.detail:
            result["detail"] = state.detail
        return result

    def _stats(self) -> dict[str, Any]:
        policy = self.loop.state.policy
        if policy is None or policy.stats is None:
            raise ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "no policy is loaded")
        return policy.stats
