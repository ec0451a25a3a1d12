"""Typed application keys: what handlers find in ``request.app`` (set up by the app factory)."""

from __future__ import annotations

from aiohttp import web

from bridge.http.metrics import HttpMetrics
from bridge.http.settings import HttpSettings
from bridge.http.upstream import Upstream
from bridge.image_args import ImageLimits

SETTINGS = web.AppKey("settings", HttpSettings)
METRICS = web.AppKey("metrics", HttpMetrics)
UPSTREAM = web.AppKey("upstream", Upstream)
IMAGE_LIMITS = web.AppKey("image_limits", ImageLimits)
