"""Benchmarks of vtla-bridge: transport overhead, batching scaling, control under VLM load, GPU size.

Run them with ``vtla-bridge bench all`` (or ``python -m bench all``); see ``docs/benchmarks.md``.
Every benchmark measures the things it compares in one run, alternating between them, and
reports medians, p99 and ratios: on a shared, noisy machine absolute times drift, ratios hold.
"""
