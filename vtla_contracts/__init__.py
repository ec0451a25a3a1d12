"""The contracts layer: facts every side of vtla-bridge agrees on, torch-free and dependency-light.

Imported by ``bridge`` (protocol, clients, server), ``models`` and ``sim_adapters`` alike; it
imports none of them (``tests/test_layering.py`` enforces it). Each fact lives here once:

- :mod:`vtla_contracts.action_layout` — the 7-D action of an ``act`` result (names, units, dims);
- :mod:`vtla_contracts.tactile_layout` — force/torque length and the touch scene's pad grid;
- :mod:`vtla_contracts.privileged_state` — the privileged-state vector adapters send as ``proprio``;
- :mod:`vtla_contracts.model_spec` — which model to load (one ``[policy]``/``[vlm]`` table);
- :mod:`vtla_contracts.openpi_keys` — openpi observation key mappings (presets, the custom form);
- :mod:`vtla_contracts.errors` — the project's one error hierarchy for configs and checkpoints.
"""
