"""The VTLA (vision-tactile-language-action) policy served by ``act``.

Entry points: :func:`models.vtla.serving.load_policy` (the registry factory) and
:func:`models.vtla.convert.main` (``vtla-bridge convert-vtla``). Import those modules directly;
this package imports nothing so that merely naming it stays cheap.
"""
