"""openpi's websocket policy protocol in front of the inference server (docs/openpi.md).

Any evaluation loop written for openpi-client's ``WebsocketClientPolicy`` drives the bridge's
policy unchanged; each websocket connection is a ZeroMQ client of the one inference loop, so
observations of all connections are batched together.
"""
