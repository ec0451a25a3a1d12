"""The HTTP companion: predecessor-compatible REST, Moondream-style ``/v1``, metrics and a web UI.

It runs in its own process and talks to the inference server over ZeroMQ like any simulator;
it never imports torch.
"""

from bridge.http.app import create_app
from bridge.http.settings import HttpSettings, settings_from_config

__all__ = ["HttpSettings", "create_app", "settings_from_config"]
