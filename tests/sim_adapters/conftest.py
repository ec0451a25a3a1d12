"""Pick MuJoCo's offscreen GL backend before any test imports mujoco (importorskip included)."""

from sim_adapters.interface import configure_gl_backend

configure_gl_backend()
