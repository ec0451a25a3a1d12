"""Moondream 2 (revision 2025-04-14) in the project's own torch code, served step-wise.

Entry point for the server: :func:`models.moondream.serving.load_generator`.
"""
