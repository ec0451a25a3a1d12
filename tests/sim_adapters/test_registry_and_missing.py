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
    with pytest.raises(SimUnavailable, match=r"pip install mani_skill.*mesa-vulkan-drivers"):
        make_adapter("maniskill", AdapterSettings(task="PickCube-v1"))


@pytest.mark.skipif(importlib.util.find_spec("libero") is not None, reason="LIBERO is installed")
def test_missing_libero_names_the_packages():
    with pytest.raises(SimUnavailable, match="LIBERO"):
        make_adapter("libero", AdapterSettings(task="libero_spatial/0"))


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
