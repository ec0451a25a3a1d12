"""ZeroMQ CURVE: encrypted, authenticated transport between clients and the inference server.

Keys are ZeroMQ certificate files (``zmq.auth`` format, Z85 text): ``NAME.key`` holds a public key,
``NAME.key_secret`` the public and the secret key. ``vtla-bridge keys DIR`` writes a server pair
and client pairs. The server loads its ``.key_secret``; it accepts either the clients whose public
``.key`` files are in a directory (unknown keys are refused during the handshake), or any client
key (then only encryption comes from CURVE, and the server must also require tokens). Tokens,
when configured, are still checked inside the encrypted channel.

This module imports nothing heavy and is shared by the server and both clients.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

logger = logging.getLogger(__name__)

_ZAP_DOMAIN = b"vtla-bridge"


@dataclass(frozen=True)
class CurveClientKeys:
    """What a client needs: the server's public key and its own key pair (Z85 bytes)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_public_file: str | Path, client_secret_file: str | Path) -> CurveClientKeys:
        server_public, _ = zmq.auth.load_certificate(str(server_public_file))
        public, secret = zmq.auth.load_certificate(str(client_secret_file))
        if secret is None:
            raise ValueError(f"{client_secret_file}: holds no secret key (use the .key_secret file)")
        return cls(server_public, public, secret)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (before connect) a CURVE client of the server."""
        sock.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


@dataclass(frozen=True)
class CurveServerKeys:
    public: bytes
    secret: bytes
    clients_dir: str  # directory of allowed client public keys; "" -> any client key

    @classmethod
    def from_files(cls, server_secret_file: str | Path, clients_dir: str = "") -> CurveServerKeys:
        public, secret = zmq.auth.load_certificate(str(server_secret_file))
        if secret is None:
            raise ValueError(f"{server_secret_file}: holds no secret key (use the .key_secret file)")
        if clients_dir and not Path(clients_dir).is_dir():
            raise ValueError(f"CURVE clients directory not found: {clients_dir}")
        return cls(public, secret, clients_dir)


class CurveGuard:
    """The server side: a ZAP authenticator (its own thread and inproc socket) and the ROUTER options."""

    def __init__(self, context: zmq.Context[Any], keys: CurveServerKeys) -> None:
        self.keys = keys
        self._auth = ThreadAuthenticator(context, log=logging.getLogger("bridge.curve.zap"))
        self._auth.start()
        location = keys.clients_dir or zmq.auth.CURVE_ALLOW_ANY
        self._auth.configure_curve(domain=_ZAP_DOMAIN.decode(), location=location)
        logger.info("CURVE on: %s", f"clients in {keys.clients_dir}" if keys.clients_dir else "any client key")

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` (before bind) a CURVE server."""
        sock.setsockopt(zmq.CURVE_SERVER, 1)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, self.keys.public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, self.keys.secret)
        sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN)

    def stop(self) -> None:
        self._auth.stop()


def write_key_pairs(directory: str | Path, names: Sequence[str]) -> list[tuple[Path, Path]]:
    """Create ``NAME.key`` and ``NAME.key_secret`` for each name; never overwrites existing files."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        public, secret = out / f"{name}.key", out / f"{name}.key_secret"
        if public.exists() or secret.exists():
            raise FileExistsError(f"{public} or {secret} exists; remove it first or pick another name")
        public_file, secret_file = zmq.auth.create_certificates(str(out), name)
        Path(secret_file).chmod(0o600)
        written.append((Path(public_file), Path(secret_file)))
    return written


def keys_main(argv: Sequence[str] | None = None) -> int:
    """``vtla-bridge keys DIR``: a server key pair and client key pairs, in ZeroMQ's format."""
    parser = argparse.ArgumentParser(
        prog="vtla-bridge keys",
        description="write CURVE key pairs (ZeroMQ certificate files): NAME.key (public), NAME.key_secret",
    )
    parser.add_argument("directory", help="where to write the files (created if missing)")
    parser.add_argument("--server", default="server", help="name of the server pair (default: server)")
    parser.add_argument("--client", action="append", default=None,
                        help="name of a client pair (repeatable; default: one named 'client')")
    parser.add_argument("--no-server", action="store_true", help="write client pairs only")
    args = parser.parse_args(argv)
    names = ([] if args.no_server else [args.server]) + (args.client or ["client"])
    try:
        pairs = write_key_pairs(args.directory, names)
    except (FileExistsError, OSError) as exc:
        print(f"vtla-bridge keys: {exc}", file=sys.stderr)
        return 1
    for public, secret in pairs:
        print(f"{public}  {secret}")
    print("server: [server] curve_secret_key_file = <server.key_secret>, curve_clients_dir = <dir of client .key>\n"
          "clients: curve=CurveClientKeys.from_files(<server.key>, <client.key_secret>)", file=sys.stderr)
    return 0
