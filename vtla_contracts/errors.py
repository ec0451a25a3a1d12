"""The project's one error hierarchy for bad configuration and bad checkpoints.

Every layer raises these (the TOML loader, the model configs, the checkpoint loaders), so a
caller catches one class whatever layer noticed the problem.
"""

from __future__ import annotations


class VtlaBridgeError(Exception):
    """Base of the errors this project raises on purpose (not protocol error replies)."""


class ConfigError(VtlaBridgeError, ValueError):
    """A configuration value is missing, of the wrong type or out of range; the message names it."""


class CheckpointError(VtlaBridgeError, ValueError):
    """A checkpoint directory or file cannot be loaded as the model it claims to be."""
