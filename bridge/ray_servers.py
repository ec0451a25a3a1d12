"""Inference servers placed by Ray: one actor per GPU (``num_gpus=1``), endpoints discovered from Ray.

    import ray
    from bridge.ray_servers import discover_endpoints, start_servers
    ray.init(address="auto")
    endpoints = start_servers(4, config="configs/default.toml")   # 4 actors, one GPU each
    # any driver on the cluster, later:
    client = BridgeClient(discover_endpoints())                    # or: run-sim ... --ray auto --server ray

Each actor runs an ordinary :class:`bridge.server.InferenceServer` in its own worker process,
bound on ``tcp://0.0.0.0:PORT`` of its node (a free port), and is a *named* actor
(``vtla-server-K`` in the ``vtla`` namespace) so that clients find it by name — Ray is the
registry, not a service of ours. Ray gives an actor with ``num_gpus=1`` its own GPU through
``CUDA_VISIBLE_DEVICES``, so the server's device is ``cuda`` (cuda:0 of what it can see); with
``num_gpus=0`` it serves on CPU (the tests). A dead actor is restarted by Ray
(``max_restarts``) and keeps its name; clients skip it meanwhile (:mod:`bridge.endpoints`).
Needs the ``ray`` extra.
"""

from __future__ import annotations

import logging
from typing import Any

from bridge.config import load_config, with_overrides
from bridge.ray_discovery import NAME_PREFIX, NAMESPACE, discover_endpoints
from bridge.supervise import free_tcp_port

logger = logging.getLogger(__name__)

__all__ = ["ServerActor", "discover_endpoints", "start_servers", "stop_servers"]


class ServerActor:
    """The body of one server actor (wrapped with ``ray.remote`` by :func:`start_servers`)."""

    def __init__(self, config_path: str | None, device: str | None, sections: dict[str, dict[str, Any]]) -> None:
        import ray

        from bridge.server import InferenceServer

        host = ray.util.get_node_ip_address()
        port = free_tcp_port("0.0.0.0")
        if device is None:
            device = "cuda" if ray.get_gpu_ids() else "cpu"
        config = with_overrides(load_config(config_path), server={"bind": f"tcp://0.0.0.0:{port}"},
                                device={"device": device}, **sections)
        self.endpoint = f"tcp://{host}:{port}"
        self.server = InferenceServer(config)
        self.server.start()

    def ready(self, timeout_s: float = 600.0) -> str:
        """Blocks until the models are loaded; -> the endpoint clients connect to."""
        if not self.server.wait_ready(timeout_s):
            raise RuntimeError(f"server {self.endpoint} not ready: {self.server.loop.state.detail}")
        return self.endpoint

    def stop(self) -> None:
        self.server.stop()


def start_servers(count: int, *, config: str | None = None, num_gpus: float = 1, device: str | None = None,
                  ready_timeout_s: float = 600.0, max_restarts: int = 3,
                  sections: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Start ``count`` named server actors on the connected Ray cluster; -> their endpoints once ready."""
    import ray

    remote = ray.remote(num_gpus=num_gpus, max_restarts=max_restarts)(ServerActor)
    actors = [remote.options(name=f"{NAME_PREFIX}{k}", namespace=NAMESPACE, lifetime="detached")
              .remote(config, device, dict(sections or {})) for k in range(count)]
    endpoints: list[str] = ray.get([a.ready.remote(ready_timeout_s) for a in actors])  # type: ignore[attr-defined]
    logger.info("ray server actors ready: %s", ", ".join(endpoints))
    return endpoints


def stop_servers() -> int:
    """Stop and remove every server actor; -> how many."""
    import ray

    names = [entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
             if entry["name"].startswith(NAME_PREFIX) and entry.get("namespace") == NAMESPACE]
    for name in names:
        actor = ray.get_actor(name, namespace=NAMESPACE)
        try:
            ray.get(actor.stop.remote(), timeout=30)
        finally:
            ray.kill(actor, no_restart=True)
    return len(names)
