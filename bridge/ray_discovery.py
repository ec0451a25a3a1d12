"""Finding the inference servers that :mod:`bridge.ray_servers` placed on a Ray cluster (client side).

The server actors are named ``vtla-server-K`` in the Ray namespace ``vtla``; Ray is the registry.
Torch-free: a client (``run-sim --ray ... --server ray``) needs only ``ray``.
"""

from __future__ import annotations

NAMESPACE = "vtla"
NAME_PREFIX = "vtla-server-"


def discover_endpoints(timeout_s: float = 600.0) -> list[str]:
    """The endpoints of every server actor on the connected cluster (sorted by name)."""
    import ray

    names = sorted(entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
                   if entry["name"].startswith(NAME_PREFIX) and entry.get("namespace") == NAMESPACE)
    if not names:
        raise RuntimeError(f"no {NAME_PREFIX}* actors in Ray namespace {NAMESPACE!r}")
    actors = [ray.get_actor(name, namespace=NAMESPACE) for name in names]
    endpoints: list[str] = ray.get([a.ready.remote(timeout_s) for a in actors])
    return endpoints
