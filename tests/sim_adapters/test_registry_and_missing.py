"""Adapters are looked up lazily; a missing simulator says exactly what to install."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from sim_adapters.interface import AdapterSettings, SimUnavailable, UnknownTask
from sim_adapters.simulators import ADAPTERS, make_adapter


def test_importing_the_package_and_runner_loads_no_simulator_and_no_torch():
    code = (
        "import sys, sim_adapters.runner, sim_adapters.simulators, vtla_contracts.privileged_state\n"
        "bad = [m for m in ('torch', 'robosuite', 'mujoco', 'gymnasium') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_simulator_lists_the_known_ones():
    with pytest.raises(ValueError, match="robosuite"):
        make_adapter("gazebo", AdapterSettings(task="x"))


@pytest.mark.skipif(importlib.util.find_spec("mani_skill") is not None, reason="ManiSkill is installed")
def test_missing_maniskill_names_the_packages():
    with pytest.raises(SimUnavailable, match=r"pip install torch==2.13.0 mani-skill==3.0.1 sapien==3.0.3.*mesa-vulkan"):
        make_adapter("maniskill", AdapterSettings(task="PickCube-v1"))


@pytest.mark.skipif(importlib.util.find_spec("metaworld") is not None, reason="Meta-World is installed")
def test_missing_metaworld_names_the_no_deps_install():
    with pytest.raises(SimUnavailable, match=r"--no-deps metaworld==3.1.1"):
        make_adapter("metaworld", AdapterSettings(task="pick-place-v3"))


def test_cameras_setting_validates_names():
    settings = AdapterSettings(task="x", cameras=("agentview", "wrist"))
    assert settings.camera_names(("agentview",), ("agentview", "wrist")) == ("agentview", "wrist")
    assert AdapterSettings(task="x", cameras=("all",)).camera_names(("a",), ("a", "b")) == ("a", "b")
    assert AdapterSettings(task="x").camera_names(("a",), ("a", "b")) == ("a",)
    with pytest.raises(ValueError, match="this simulator has"):
        AdapterSettings(task="x", cameras=("nope",)).camera_names(("a",), ("a", "b"))
    with pytest.raises(ValueError, match="distinct"):
        AdapterSettings(task="x", cameras=("a", "a"))


@pytest.mark.skipif(importlib.util.find_spec("libero") is not None, reason="LIBERO is installed")
def test_missing_libero_names_the_packages():
    with pytest.raises(SimUnavailable, match="LIBERO"):
        make_adapter("libero", AdapterSettings(task="libero_spatial/0"))


def test_run_sim_parses_a_camera_list():
    from sim_adapters.runner import build_parser

    args = build_parser().parse_args(["libero", "--task", "libero_spatial/0", "--cameras", "agentview, wrist"])
    assert args.cameras == ("agentview", "wrist")


def test_bad_libero_task_syntax():
    with pytest.raises(UnknownTask, match="SUITE/INDEX"):
        make_adapter("libero", AdapterSettings(task="libero_spatial"))


@pytest.mark.parametrize("sim,task", [("robosuite", "Wipe"), ("touch", "stack"), ("fetch", "Slide")])
def test_unknown_tasks_are_rejected_before_building_a_simulator(sim, task):
    if sim in ("robosuite", "touch", "fetch"):
        module = {"robosuite": "robosuite", "touch": "mujoco", "fetch": "gymnasium_robotics"}[sim]
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} not installed")
    with pytest.raises(UnknownTask):
        make_adapter(sim, AdapterSettings(task=task))


def test_every_registered_adapter_names_an_existing_module():
    for target in ADAPTERS.values():
        module, _, _ = target.partition(":")
        assert importlib.util.find_spec(module) is not None, target
