"""CURVE over real sockets (issue 11, item 8): unknown client keys are refused, the traffic is
unreadable on the wire (captured by a raw TCP relay between client and server), tokens are still
checked inside the encrypted channel, and ``hello`` says ``auth: "curve"``."""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.client import BridgeClient
from bridge.curve_keys import CurveClientKeys, keys_main, write_key_pairs
from bridge.errors import BridgeError, BridgeTimeout
from bridge.protocol import ErrorCode
from tests.conftest import StartServer

MARKER = "SECRET-INSTRUCTION-7f3a"
TOKEN = "t0ken-in-plain-sight"


class TcpRelay:
    """Forwards one TCP port to another and keeps every byte that passes, as a wire tap would."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.captured = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        pairs: list[tuple[socket.socket, socket.socket]] = []
        self._listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
                pairs.append((conn, upstream))
            except TimeoutError:
                pass
            socks = [s for pair in pairs for s in pair]
            if not socks:
                continue
            readable, _, _ = select.select(socks, [], [], 0.05)
            for sock in readable:
                peer = next(b if a is sock else a for a, b in pairs if sock in (a, b))
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if data:
                    self.captured += data
                    try:
                        peer.sendall(data)
                    except OSError:
                        pass
        for a, b in pairs:
            a.close()
            b.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    write_key_pairs(tmp_path / "server", ["server"])
    write_key_pairs(tmp_path / "allowed", ["sim"])
    write_key_pairs(tmp_path / "others", ["rogue"])
    clients_dir = tmp_path / "clients"
    clients_dir.mkdir()
    (clients_dir / "sim.key").write_bytes((tmp_path / "allowed" / "sim.key").read_bytes())  # public key only
    return {
        "server_secret": tmp_path / "server" / "server.key_secret",
        "server_public": tmp_path / "server" / "server.key",
        "clients_dir": clients_dir,
        "sim": tmp_path / "allowed" / "sim.key_secret",
        "rogue": tmp_path / "others" / "rogue.key_secret",
    }


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


@pytest.fixture
def relay_factory() -> Iterator[type[TcpRelay]]:
    relays: list[TcpRelay] = []

    def make(port: int) -> TcpRelay:
        relay = TcpRelay(port)
        relays.append(relay)
        return relay

    yield make  # type: ignore[misc]
    for relay in relays:
        relay.close()


def _act(client: BridgeClient) -> None:
    client.act(image=np.zeros((8, 8, 3), np.uint8), instruction=MARKER)


def test_curve_encrypts_authenticates_and_still_checks_tokens(
    start_server: StartServer, keys: dict[str, Path], relay_factory: type[TcpRelay]
) -> None:
    server = start_server(server={"curve_secret_key_file": str(keys["server_secret"]),
                                  "curve_clients_dir": str(keys["clients_dir"]), "auth_tokens": (TOKEN,)})
    sim = CurveClientKeys.from_files(keys["server_public"], keys["sim"])
    relay = relay_factory(_port(server.endpoint))
    through_relay = f"tcp://127.0.0.1:{relay.port}"
    with BridgeClient(through_relay, timeout_s=10, auth=TOKEN, curve=sim) as client:
        assert client.hello()["auth"] == "curve"
        _act(client)
    assert len(relay.captured) > 1000  # the act went through the tap
    assert MARKER.encode() not in relay.captured and TOKEN.encode() not in relay.captured
    with BridgeClient(server.endpoint, timeout_s=10, auth="wrong", curve=sim) as client:
        with pytest.raises(BridgeError) as info:
            _act(client)
        assert info.value.code == ErrorCode.UNAUTHORIZED
    rogue = CurveClientKeys.from_files(keys["server_public"], keys["rogue"])
    with BridgeClient(server.endpoint, timeout_s=1.5, auth=TOKEN, curve=rogue) as client:
        with pytest.raises(BridgeTimeout):  # refused in the handshake: no request ever reaches the server
            client.hello()
    with BridgeClient(server.endpoint, timeout_s=1.5, auth=TOKEN) as client:
        with pytest.raises(BridgeTimeout):  # plain-text clients cannot talk to a CURVE server
            client.hello()


def test_without_curve_the_same_traffic_is_readable(
    start_server: StartServer, relay_factory: type[TcpRelay]
) -> None:
    # the control for the test above: the tap does see plain-text requests
    server = start_server(server={"auth_tokens": (TOKEN,)})
    relay = relay_factory(_port(server.endpoint))
    with BridgeClient(f"tcp://127.0.0.1:{relay.port}", timeout_s=10, auth=TOKEN) as client:
        assert client.hello()["auth"] == "token"
        _act(client)
    assert MARKER.encode() in relay.captured and TOKEN.encode() in relay.captured


def test_any_client_key_mode_needs_tokens(start_server: StartServer, keys: dict[str, Path]) -> None:
    server = start_server(server={"curve_secret_key_file": str(keys["server_secret"]), "auth_tokens": (TOKEN,)})
    rogue = CurveClientKeys.from_files(keys["server_public"], keys["rogue"])
    with BridgeClient(server.endpoint, timeout_s=10, auth=TOKEN, curve=rogue) as client:
        assert client.hello()["auth"] == "curve"
    with BridgeClient(server.endpoint, timeout_s=10, curve=rogue) as client:
        with pytest.raises(BridgeError) as info:
            _act(client)
        assert info.value.code == ErrorCode.UNAUTHORIZED


def test_keys_command_writes_zeromq_certificates(tmp_path: Path) -> None:
    assert keys_main([str(tmp_path), "--client", "a", "--client", "b"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["a.key", "a.key_secret", "b.key", "b.key_secret", "server.key", "server.key_secret"]
    loaded = CurveClientKeys.from_files(tmp_path / "server.key", tmp_path / "a.key_secret")
    assert len(loaded.public) == 40 and len(loaded.secret) == 40  # Z85 of 32-byte keys
    assert keys_main([str(tmp_path), "--client", "a"]) == 1  # never overwrites


def test_http_companion_reaches_a_curve_server(start_server: StartServer, keys: dict[str, Path]) -> None:
    import asyncio

    from aiohttp.test_utils import TestClient, TestServer

    from bridge.http.app import create_app
    from bridge.http.settings import HttpSettings

    server = start_server(server={"curve_secret_key_file": str(keys["server_secret"]),
                                  "curve_clients_dir": str(keys["clients_dir"]), "auth_tokens": (TOKEN,)})
    settings = HttpSettings(server_endpoint=server.endpoint, server_token=TOKEN,
                            curve=CurveClientKeys.from_files(keys["server_public"], keys["sim"]))

    async def run() -> None:
        async with TestClient(TestServer(create_app(settings))) as client:
            resp = await client.get("/health")
            body = await resp.json()
            assert resp.status == 200 and body["server"]["reachable"] is True, body

    asyncio.run(run())
