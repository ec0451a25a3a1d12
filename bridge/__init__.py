"""vtla-bridge: a ZeroMQ inference server for robot policies and Moondream 2, and its clients.

Importing this package (and ``bridge.client``) never imports torch or transformers.
"""

__version__ = "0.1.0"
