"""The ``simulated`` model kind: the real models' timing on a named accelerator, without computing.

Each call waits (``time.sleep``, the GIL released) for the time the real model would take on the
device of a TOML preset — FLOPs and bytes counted from the real architecture configs, the
device's peak figures, efficiency factors and per-kernel launch overhead — and returns correctly
shaped outputs. It measures the server, the transport and the scheduling policy at GPU timing
on any machine, and is a capacity-planning tool (docs/simulated.md). Outputs are meaningless and
every report says ``simulated: true``.
"""
