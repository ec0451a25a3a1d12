"""The inference server: one ROUTER socket, one I/O thread, one inference loop.

The I/O thread only reads, decodes, validates, admits and sends. JPEG/PNG decoding runs in a
small worker pool. ``hello``, ``health`` and ``stats`` are answered by the I/O thread from facts
the loop published at load time, so they stay fast while the models are busy.

The socket and the I/O thread's state (admission counters, pending work) are guarded by one
lock, ``_io_lock``, that the I/O thread holds except while it waits in its poller (on the
socket's ``ZMQ_FD`` and the Outbox's pipe, not inside ``zmq_poll``). When few requests are in
flight, the thread that produced a reply (the inference loop) takes that lock without waiting,
sends the reply itself and wakes the I/O thread only if input is pending: a lone client's reply
then goes out with no thread hand-off. Under load the I/O thread sends, as before, so the loop
never spends its time on a batch's worth of sends.
"""

from __future__ import annotations

import errno
import itertools
import logging
import select
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

import zmq

from bridge.admission import Admission, AdmissionLimits
from bridge.codec import SEND_COPY_MAX_BYTES, Buffer, HeaderError, decode_header, encode_message
from bridge.config import BridgeConfig
from bridge.curve_keys import CurveGuard, CurveServerKeys
from bridge.decode_pool import FairDecodePool
from bridge.exposure import endpoint_is_local, warn_if_exposed
from bridge.image_args import ImageLimits, contains_encoded_image
from bridge.inference_loop import GeneratorLoader, InferenceLoop, PolicyLoader
from bridge.parsing import RequestHead, parse_act, parse_generation, parse_head, parse_session, readable_id
from bridge.protocol import (
    GENERATION_OPS,
    OP_ACT,
    OP_CANCEL,
    OP_HEALTH,
    OP_HELLO,
    OP_RESET,
    OP_STATS,
    ErrorCode,
    ProtocolError,
    error_header,
    success_header,
)
from bridge.server_status import health_result, hello_result, stats_result, transport_counters
from bridge.socket_frames import NOBLOCK, input_pending, recv_frames, send_frames
from bridge.work import ClientKey, Outbox, Outgoing, Work
from models import model_kinds

logger = logging.getLogger(__name__)

_HARD_FRAME_FACTOR = 2  # frames over 2x the message limit make ZeroMQ drop the connection outright
_RECV_BURST = 256  # messages read per turn before the queued replies get theirs
_IO_WAIT_MS = 100  # the I/O thread's longest wait: how soon it notices a stop
_BULK_SLICE = 8  # stream chunks sent between two looks for act replies and requests
# the producing thread sends its own reply while at most this many requests are in flight
_DIRECT_SEND_MAX_INFLIGHT = 4


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
            config.limits.max_image_width,
            config.limits.max_image_height,
            config.limits.max_image_pixels,
            config.limits.max_decoded_bytes_per_byte,
        )
        self._decoders = FairDecodePool(config.server.decode_workers, config.server.decode_workers_per_client)
        self.admission = Admission(AdmissionLimits.from_config(config.server))
        self.replies_dropped: Counter[str] = Counter()  # by reason: peer_gone, send_queue_full
        self._pending: dict[tuple[ClientKey, int | str], Work] = {}  # (client, id) -> unanswered work
        self._unsent: deque[Outgoing] = deque()  # bulk replies a flush left for the next one (I/O lock)
        self._keys = itertools.count(1)  # generation request keys, unique per server
        self._started_s = time.monotonic()
        self._stop_requested = threading.Event()
        self._bound = threading.Event()
        self._bind_error: BaseException | None = None
        self.endpoint = config.server.bind
        self._served_ops = self._ops_for(config)
        self._io = threading.Thread(target=self._io_main, name="router-io", daemon=True)
        self._io_lock = threading.Lock()  # the socket and admission/pending state (see the module doc)
        self._sock: zmq.Socket[Any] | None = None  # set while the socket is open, under _io_lock
        self.outbox.direct_send = self._send_from_producer
        self._held: Work | None = None  # the newest work parsed by the I/O thread, not yet submitted
        self._curve: CurveGuard | None = None
        if config.server.curve_secret_key_file:
            keys = CurveServerKeys.from_files(config.server.curve_secret_key_file, config.server.curve_clients_dir)
            self._curve = CurveGuard(self._context, keys)

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
        logger.info("stopping: finishing %d in-flight requests", self.admission.total)
        self.loop.stop(self.config.server.shutdown_grace_s)
        self.loop.join(self.config.server.shutdown_grace_s + 5.0)
        self._stop_requested.set()
        self._io.join(5.0)
        self._decoders.shutdown()
        self.outbox.close()
        if self._curve is not None:
            self._curve.stop()
        if self._own_context:
            self._context.term()
        logger.info("stopped")

    def __enter__(self) -> InferenceServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def auth_mode(self) -> str:
        """hello.auth: "curve" with CURVE (tokens, if set, are checked inside it), "token", or "none"."""
        if self._curve is not None:
            return "curve"
        return "token" if self.config.server.auth_tokens else "none"

    @property
    def queue_depth(self) -> int:
        return self.admission.total

    # ------------------------------------------------------------------ I/O thread

    def _io_main(self) -> None:
        sock = self._context.socket(zmq.ROUTER)
        try:
            if self._curve is not None:
                self._curve.apply(sock)
            sock.setsockopt(zmq.LINGER, 0)
            sock.copy_threshold = SEND_COPY_MAX_BYTES
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
        warn_if_exposed(logger, "the inference server", self.endpoint, endpoint_is_local(self.endpoint),
                        self.auth_mode != "none")
        self._sock = sock
        # Plain file descriptors, so the OS poll, not zmq_poll (whose first pass is an extra poll
        # with timeout 0, behind pyzmq's Python Poller): one syscall and one GIL release per wait.
        poller = select.poll()
        poller.register(int(sock.getsockopt(zmq.FD)), select.POLLIN)  # edge-like: EVENTS is checked below
        wake_fd = self.outbox.wake_fd
        poller.register(wake_fd, select.POLLIN)
        try:
            while not (self._stop_requested.is_set() and not self.loop.alive):
                with self._io_lock:
                    pending = self._serve_socket(sock)
                if not pending:
                    for fd, _ in poller.poll(_IO_WAIT_MS):
                        if fd == wake_fd:
                            self.outbox.clear_wake()  # (only this thread reads the pipe)
            with self._io_lock:
                self._flush(sock, yield_to_input=False)
        finally:
            with self._io_lock:
                self._sock = None
                sock.close(linger=0)

    def _serve_socket(self, sock: zmq.Socket[Any]) -> bool:
        """Read a bounded burst, send what is queued; -> True when input is still waiting.
        (``ZMQ_FD`` only signals changes: it is safe to wait on it once EVENTS shows no input.)"""
        pending = False
        for _ in range(_RECV_BURST):
            pending = input_pending(sock)  # (no zmq.Again raised at the end of every burst)
            if not pending:
                break
            try:
                frames = recv_frames(sock, NOBLOCK)
            except zmq.Again:
                pending = False
                break
            self._on_message(sock, frames)
        if self._flush(sock):  # a send may have taken the FD's signal: look again
            pending = input_pending(sock)
        self._submit_held()  # last, so that the woken loop does not wait for this thread's GIL
        return pending

    def _hold(self, work: Work) -> None:
        """Submit the previously held work and hold ``work`` until the end of this read burst."""
        held, self._held = self._held, work
        if held is not None:
            self.loop.submit(held)

    def _submit_held(self) -> None:
        held, self._held = self._held, None
        if held is not None:
            self.loop.submit(held)

    def _send_from_producer(self) -> bool:
        """Outbox.direct_send: send the queued replies from the calling thread when few requests are
        in flight and the socket is free now; -> False to have the I/O thread woken instead."""
        if self.admission.total > _DIRECT_SEND_MAX_INFLIGHT or not self._io_lock.acquire(blocking=False):
            return False
        try:
            sock = self._sock
            if sock is None:
                return False
            self._flush(sock)
            if input_pending(sock):  # the send may have taken the FD's signal: the I/O thread reads
                self.outbox.wake()
            return True
        finally:
            self._io_lock.release()

    def _flush(self, sock: zmq.Socket[Any], yield_to_input: bool = True) -> int:
        """Send what the Outbox holds, ``act`` replies first -> how many messages that was.

        The rest (a decode step queues a chunk per stream) goes out ``_BULK_SLICE`` at a time;
        between slices, act replies queued meanwhile go first and, with ``yield_to_input``,
        waiting requests are read first (what is left stays in ``_unsent`` for the next flush),
        so that 32 streams' chunks hold neither an act's reply nor its request."""
        outbox, unsent = self.outbox, self._unsent
        sent = 0
        while True:
            for out in outbox.drain_control():
                self._send_out(sock, out)
                sent += 1
            outbox.drain_bulk(unsent)
            if not unsent:
                return sent
            for _ in range(min(_BULK_SLICE, len(unsent))):
                self._send_out(sock, unsent.popleft())
                sent += 1
            if yield_to_input and unsent and input_pending(sock):
                return sent

    def _send_out(self, sock: zmq.Socket[Any], out: Outgoing) -> None:
        if out.final:
            self.admission.release(out.client, out.admitted_bytes)
            if out.work is not None and self._pending.get((out.client, out.work.request_id)) is out.work:
                del self._pending[(out.client, out.work.request_id)]
        delivered = self._send(sock, out.frames)
        if not delivered and not out.final and out.work is not None:
            self._cancel_work(out.work)  # a stream chunk the client cannot receive: it is gone

    def _send(self, sock: zmq.Socket[Any], frames: list[Buffer]) -> bool:
        try:
            send_frames(sock, frames, NOBLOCK)
        except zmq.ZMQError as exc:  # peer gone (EHOSTUNREACH) or its queue full (EAGAIN)
            reason = "send_queue_full" if exc.errno == errno.EAGAIN else "peer_gone"
            self.replies_dropped[reason] += 1
            logger.debug("reply dropped (%s): %s", reason, exc)
            return False
        return True

    def _cancel_work(self, work: Work) -> None:
        """Ask the loop to end ``work`` with ``cancelled`` (idempotent; the loop frees its slot)."""
        if work.cancel_code is None:
            work.cancel_code = ErrorCode.CANCELLED
            self.loop.submit(Work(work.envelope, work.client, work.request_id, OP_CANCEL, time.perf_counter(),
                                  None, payload=work))

    def _reply_error(self, sock: zmq.Socket[Any], envelope: list[bytes], rid: Any, exc: ProtocolError) -> None:
        frames = encode_message(error_header(rid, exc.code, exc.message))
        self._send(sock, [*envelope, b"", *frames])

    def _on_message(self, sock: zmq.Socket[Any], frames: list[zmq.Frame]) -> None:
        received_s = time.perf_counter()
        if len(frames) > 1 and len(frames[1]) == 0 and len(frames[0]):  # a DEALER's: [identity, b"", ...]
            split: int | None = 1
        else:  # through proxies: identities, then the delimiter
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
        size = sum(map(len, body))
        header: Any = None
        try:
            if size > self.config.server.max_message_bytes:
                raise ProtocolError(
                    ErrorCode.PAYLOAD_TOO_LARGE,
                    f"message is {size} bytes, limit {self.config.server.max_message_bytes}",
                )
            try:
                header = decode_header(
                    body[0].buffer, [f.buffer for f in body[1:]], self.config.limits.max_array_bytes
                )
            except HeaderError as exc:
                header = exc.header  # decoded once: what was readable still gives the id
                raise
            head = parse_head(
                header, self.config.server.auth_tokens, self._served_ops, self.config.limits.max_deadline_ms
            )
            self._dispatch(sock, envelope, head, received_s, size)
        except ProtocolError as exc:
            self._reply_error(sock, envelope, readable_id(header), exc)
        except Exception:  # never let one request take the I/O thread down
            logger.exception("unexpected error handling a request")
            self._reply_error(
                sock, envelope, readable_id(header), ProtocolError(ErrorCode.INTERNAL, "unexpected server error")
            )

    @staticmethod
    def _ops_for(config: BridgeConfig) -> frozenset[str]:
        ops = {OP_HELLO, OP_HEALTH, OP_STATS, OP_RESET, OP_ACT, OP_CANCEL}
        if config.vlm.enabled:
            ops.update(GENERATION_OPS)
        return frozenset(ops)

    def _dispatch(
        self, sock: zmq.Socket[Any], envelope: list[bytes], head: RequestHead, received_s: float, size: int
    ) -> None:
        if head.op in (OP_HELLO, OP_HEALTH, OP_STATS):
            result = self._status(head.op)
            elapsed_ms = (time.perf_counter() - received_s) * 1000.0
            timing = {"queue_ms": 0.0, "compute_ms": 0.0, "server_ms": elapsed_ms, "batch_size": 1}
            threshold = None if head.inline_arrays else self.config.server.frame_threshold_bytes
            reply = encode_message(success_header(head.request_id, result, timing), threshold)
            self._send(sock, [*envelope, b"", *reply])
            return
        client = self.admission.client(envelope)  # the peer ROUTER saw, not frames the client wrote
        if head.op == OP_CANCEL:
            self._reply_cancel(sock, envelope, client, head, received_s)
            return
        if self._stop_requested.is_set() or self.loop.state.status == "stopping":
            raise ProtocolError(ErrorCode.MODEL_UNAVAILABLE, "the server is shutting down")
        self._check_model(head.op)
        self.admission.admit(client, size)  # overloaded beyond the request or byte budget
        deadline_s = received_s + head.deadline_ms / 1000.0 if head.deadline_ms is not None else None
        work = Work(envelope, client, head.request_id, head.op, received_s, deadline_s, admitted_bytes=size)
        work.inline_arrays = head.inline_arrays
        self._pending[(client, head.request_id)] = work
        key = next(self._keys)
        encoded = contains_encoded_image(head.args)
        if head.op in GENERATION_OPS or encoded:
            # JPEG/PNG decoding is the costly, client-controlled part: fair per client
            self._decoders.submit(client if encoded else None, self._prepare_and_submit, work, head.args, key)
        else:
            self._prepare_and_submit(work, head.args, key, self._hold)

    def _reply_cancel(
        self, sock: zmq.Socket[Any], envelope: list[bytes], client: ClientKey, head: RequestHead, received_s: float
    ) -> None:
        """``cancel`` {id}: end that request of the same client; answers whether it was pending."""
        target_id = readable_id({"id": head.args.get("id")})
        if target_id is None:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "cancel needs args.id: the int or str id of an earlier request")
        target = self._pending.get((client, target_id))
        if target is not None:
            self._cancel_work(target)
        timing = {"queue_ms": 0.0, "compute_ms": 0.0, "server_ms": (time.perf_counter() - received_s) * 1e3,
                  "batch_size": 1}
        header = success_header(head.request_id, {"cancelled": target is not None}, timing)
        self._send(sock, [*envelope, b"", *encode_message(header)])

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

    def _prepare_and_submit(
        self, work: Work, args: Mapping[str, Any], key: int, submit: Callable[[Work], None] | None = None
    ) -> None:
        """Parse op arguments into the payload: in the I/O thread for ``act`` with raw arrays (then
        ``submit`` is ``_hold``), in a decode worker for JPEG/PNG and for generation requests (whose
        crops are made there too). An act then goes through the policy's ``prepare`` when it has one
        (the VTLA stages its frames there); what that holds is freed when the work is dropped."""
        try:
            if work.op == OP_ACT:
                assert self.loop.state.policy is not None
                cameras = self.loop.state.policy.description.get("cameras") or ["primary"]
                obs = parse_act(args, cameras[0], self._limits, self.config.limits.max_instruction_chars)
                prepare = self.loop.act_prepare
                work.payload = prepare(obs) if prepare is not None else obs
            elif work.op == OP_RESET:
                work.payload = parse_session(args)
            else:
                request = parse_generation(work.op, key, args, self._limits)
                generator = self.loop.generator
                work.payload = generator.prepare(request) if generator is not None else request
        except Exception as exc:
            self.outbox.fail(work, exc, "parsing")
            return
        (submit or self.loop.submit)(work)

    # ------------------------------------------------------------------ control ops

    def _status(self, op: str) -> dict[str, Any]:
        """``hello`` / ``health`` / ``stats``, answered here from what the loop published
        (bridge/server_status.py builds them)."""
        state = self.loop.state
        if op == OP_HELLO:
            return hello_result(self.config, state, self._served_ops, self.auth_mode)
        if op == OP_HEALTH:
            transport = transport_counters(self.admission, self.replies_dropped)
            uptime_s = time.monotonic() - self._started_s
            return health_result(self.config, state, self.loop.alive, uptime_s, self.admission.total, transport)
        return stats_result(state)

