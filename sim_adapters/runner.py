"""The closed-loop runner: ``vtla-bridge run-sim SIM --task T --episodes N --server ENDPOINT``.

Drives any :class:`sim_adapters.interface.SimAdapter` against the inference server through the
bridge CLIENT only (never torch): observe -> ``act`` -> execute the action chunk (re-planning or
temporal ensembling) at a fixed control rate, with a progress bar on stderr, an optional video
and a summary (success rate, episode length, round-trip / server / transport latency).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from bridge.log_setup import configure_logging
from sim_adapters.chunking import ChunkExecutor, ChunkSettings
from sim_adapters.interface import (
    ActInputs,
    AdapterSettings,
    SimAdapter,
    SimUnavailable,
    UnknownCamera,
    UnknownTask,
)
from sim_adapters.metrics import EpisodeResult, StepTiming, format_summary, summarize

logger = logging.getLogger(__name__)


class ActClient(Protocol):
    """The part of :class:`bridge.client.BridgeClient` the runner uses."""

    def act(
        self,
        image: Any = None,
        *,
        images: Mapping[str, Any] | None = None,
        instruction: str | None = None,
        tactile: Mapping[str, Any] | None = None,
        proprio: Any = None,
        session: str | None = None,
    ) -> Any: ...

    def reset(self, session: str | None = None) -> None: ...


@dataclass(frozen=True)
class PolicyInputs:
    """Which optional inputs the served policy takes, from its ``hello`` entry.

    Adapters observe everything they can (privileged state as ``proprio``, tactile image,
    force/torque); only what the policy declares is sent, so the same adapter drives a scripted
    expert (which needs ``proprio``) and the VTLA (which refuses it).
    """

    proprio: bool = True
    tactile_image: bool = True
    force_torque: bool = True

    @classmethod
    def from_hello(cls, hello: Mapping[str, Any]) -> PolicyInputs:
        for entry in (hello.get("models") or {}).values():
            if isinstance(entry, Mapping) and "action" in entry:  # the act model's entry
                tactile = entry.get("tactile") or {}
                return cls(bool(entry.get("proprio")), "image" in tactile, "force_torque" in tactile)
        return cls()

    def tactile(self, inputs: ActInputs) -> dict[str, np.ndarray] | None:
        out = {k: v for k, v in (inputs.tactile() or {}).items()
               if (k == "image" and self.tactile_image) or (k == "force_torque" and self.force_torque)}
        return out or None


@dataclass(frozen=True)
class RunSettings:
    episodes: int = 10
    seed: int = 0  # episode i uses seed + i
    instruction: str | None = None  # None -> the adapter's default for the task
    rate_hz: float | None = None  # None -> the simulator's control rate; 0 -> as fast as possible
    chunk: ChunkSettings = field(default_factory=ChunkSettings)
    stop_on_success: bool = True
    record_episodes: int = 0  # keep the frames of the first N episodes (for the video)
    session_prefix: str = "sim"
    inputs: PolicyInputs = field(default_factory=PolicyInputs)  # what to send: PolicyInputs.from_hello

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError("episodes must be >= 1")
        if self.rate_hz is not None and self.rate_hz < 0:
            raise ValueError("rate_hz must be >= 0")


@dataclass
class RunOutput:
    episodes: list[EpisodeResult]
    frames: list[np.ndarray]
    summary: dict[str, Any]


def _query(
    client: ActClient, adapter: SimAdapter, instruction: str, session: str, accepts: PolicyInputs
) -> tuple[np.ndarray, StepTiming]:
    inputs = adapter.observe()
    kwargs: dict[str, Any] = {}
    if len(inputs.images) == 1:
        kwargs["image"] = next(iter(inputs.images.values()))
    else:
        kwargs["images"] = dict(inputs.images)
    result = client.act(
        **kwargs,
        instruction=instruction,
        tactile=accepts.tactile(inputs),
        proprio=inputs.proprio if accepts.proprio else None,
        session=session,
    )
    actions = np.asarray(result.actions, dtype=np.float32)
    if actions.ndim == 1:
        actions = actions[None, :]
    timing = StepTiming(float(result.round_trip_ms), float(result.timing.get("server_ms", 0.0)))
    return actions, timing


def run_episode(
    adapter: SimAdapter,
    client: ActClient,
    settings: RunSettings,
    index: int,
    frames: list[np.ndarray] | None = None,
    on_step: Callable[[], None] | None = None,
) -> EpisodeResult:
    seed = settings.seed + index
    session = f"{settings.session_prefix}-{index}"
    instruction = settings.instruction or adapter.default_instruction
    rate_hz = adapter.control_hz if settings.rate_hz is None else settings.rate_hz
    period_s = 1.0 / rate_hz if rate_hz > 0 else 0.0
    adapter.reset(seed)
    client.reset(session)
    executor = ChunkExecutor(settings.chunk)
    result = EpisodeResult(index=index, seed=seed, success=False, steps=0, queries=0, wall_s=0.0)
    start = time.perf_counter()
    next_tick = start + period_s
    if frames is not None:
        frames.append(adapter.render())
    for step in range(adapter.max_steps):
        if executor.needs_query(step):
            actions, timing = _query(client, adapter, instruction, session, settings.inputs)
            executor.add(step, actions)
            result.timings.append(timing)
            result.queries += 1
        adapter.apply(executor.action(step))
        result.steps = step + 1
        if frames is not None:
            frames.append(adapter.render())
        if on_step is not None:
            on_step()
        if adapter.success():
            result.success = True
            if settings.stop_on_success:
                break
        if adapter.done():
            break
        if period_s:
            now = time.perf_counter()
            if now < next_tick:
                time.sleep(next_tick - now)
                next_tick += period_s
            else:
                result.overruns += 1
                next_tick = now + period_s
    result.wall_s = time.perf_counter() - start
    return result


def run_episodes(
    adapter: SimAdapter, client: ActClient, settings: RunSettings, *, progress: bool = False,
    meta: Mapping[str, Any] | None = None,
) -> RunOutput:
    """Run ``settings.episodes`` episodes; the summary is what ``--json`` writes."""
    bar: Any = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=settings.episodes * adapter.max_steps, unit="step", file=sys.stderr, dynamic_ncols=True)
        except ImportError:  # pragma: no cover - tqdm ships with the bridge client
            bar = None
    episodes: list[EpisodeResult] = []
    frames: list[np.ndarray] = []
    try:
        for i in range(settings.episodes):
            record = frames if i < settings.record_episodes else None
            ep = run_episode(adapter, client, settings, i, record, bar.update if bar is not None else None)
            episodes.append(ep)
            if bar is not None:
                bar.update(adapter.max_steps - ep.steps)  # a finished episode fills its share
                wins = sum(e.success for e in episodes)
                bar.set_postfix(success=f"{wins}/{len(episodes)}", rt_ms=f"{_last_rt(ep):.1f}")
            logger.info("episode %d: %s in %d steps (%d queries, %.1f s)", i,
                        "success" if ep.success else "failure", ep.steps, ep.queries, ep.wall_s)
    finally:
        if bar is not None:
            bar.close()
    summary = summarize(episodes, dict(meta or {}))
    return RunOutput(episodes, frames, summary)


def _last_rt(ep: EpisodeResult) -> float:
    return ep.timings[-1].round_trip_ms if ep.timings else float("nan")


# ---------------------------------------------------------------------------------------- CLI


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        height, width = (int(p) for p in parts)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HxW or N, got {text!r}") from exc
    return height, width


def _camera_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"expected camera names separated by commas, got {text!r}")
    return names


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vtla-bridge run-sim", description=__doc__.splitlines()[0])
    p.add_argument("sim", help="robosuite | touch | fetch | metaworld | maniskill | libero | package.module:Class")
    p.add_argument("--task", required=True, help="e.g. Lift (robosuite); lift (touch); pick-place-v3 (metaworld); "
                   "PickCube-v1 (maniskill); libero_spatial/0 (libero)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--server", default="tcp://127.0.0.1:5555",
                   help="inference server endpoint, or several comma-separated (the client spreads over them); "
                   "with --ray, 'ray': the server actors found in Ray (bridge/ray_servers.py)")
    p.add_argument("--workers", type=int, default=1, help="simulator processes in parallel (episode i -> i %% N)")
    p.add_argument("--ray", default="", help="run the workers as Ray tasks on this cluster address ('local': a "
                   "local Ray instance); needs the ray extra")
    p.add_argument("--instruction", default=None, help="language instruction (default: the task's)")
    p.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    p.add_argument("--video", default="", help="write the first episode(s) to this .mp4 or .gif")
    p.add_argument("--video-episodes", type=int, default=1)
    p.add_argument("--json", default="", help="write the summary as JSON to this path")
    p.add_argument("--rate-hz", type=float, default=None,
                   help="control rate (default: the simulator's; 0: as fast as possible)")
    p.add_argument("--replan-steps", type=int, default=0, help="execute this many actions per chunk (0: all)")
    p.add_argument("--temporal-ensemble", action="store_true", help="query every step and average chunks (ACT)")
    p.add_argument("--ensemble-decay", type=float, default=0.01)
    p.add_argument("--image-size", type=_image_size, default=(128, 128), help="camera HxW sent to the bridge")
    p.add_argument("--camera", default="", help="camera name (default: the adapter's)")
    p.add_argument("--cameras", type=_camera_list, default=(),
                   help="several cameras, comma-separated, sent as named images ('all': every camera)")
    p.add_argument("--max-steps", type=int, default=0, help="episode horizon (0: the task's)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="per-request client timeout")
    p.add_argument("--auth", default=None, help="server token")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--log-level", default="WARNING")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    from bridge.client import BridgeClient
    from bridge.errors import BridgeError
    from sim_adapters.simulators import make_adapter

    try:
        settings = RunSettings(
            episodes=args.episodes,
            seed=args.seed,
            instruction=args.instruction,
            rate_hz=args.rate_hz,
            chunk=ChunkSettings(args.replan_steps, args.temporal_ensemble, args.ensemble_decay),
            record_episodes=args.video_episodes if args.video else 0,
        )
        adapter_settings = AdapterSettings(
            task=args.task, image_size=args.image_size, camera=args.camera, cameras=args.cameras,
            max_steps=args.max_steps,
        )
    except ValueError as exc:
        print(f"run-sim: {exc}", file=sys.stderr)
        return 2
    if args.workers > 1 or args.ray:
        from sim_adapters.parallel_runs import main_parallel

        return main_parallel(args, settings, adapter_settings)
    try:
        adapter = make_adapter(args.sim, adapter_settings)
    except (SimUnavailable, UnknownTask, UnknownCamera, ValueError) as exc:
        print(f"run-sim: {exc}", file=sys.stderr)
        return 2
    client = BridgeClient(args.server, timeout_s=args.timeout_s, auth=args.auth)
    try:
        hello = client.hello()
        policy: Any = next(iter(hello.get("models", {}).values()), {})
        logger.info("server %s: models %s", args.server, list(hello.get("models", {})))
        if isinstance(policy, Mapping) and policy.get("random_weights"):
            print("run-sim: note: the server's policy has RANDOM weights", file=sys.stderr)
        meta = {"sim": args.sim, "task": args.task, "server": args.server, "seed": args.seed,
                "chunking": {"replan_steps": args.replan_steps, "temporal_ensemble": args.temporal_ensemble}}
        settings = replace(settings, inputs=PolicyInputs.from_hello(hello))
        out = run_episodes(adapter, client, settings, progress=not args.no_progress, meta=meta)
    except BridgeError as exc:
        print(f"run-sim: server error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
        adapter.close()
    print(format_summary(out.summary))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out.summary, indent=2))
    if args.video and out.frames:
        from sim_adapters.video import write_video

        try:
            write_video(args.video, out.frames, fps=adapter.control_hz)
        except SimUnavailable as exc:
            print(f"run-sim: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
