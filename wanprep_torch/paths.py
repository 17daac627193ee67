"""Where wanprep keeps files between runs: the models folder and the cache (FP16 copies).

Torch-free and dependency-free (the command line's start-up imports it). The cache root is the
platform's user cache folder, as platformdirs' ``user_cache_dir("wanprep")`` places it:

- Linux and other Unix: ``$XDG_CACHE_HOME/wanprep``, else ``~/.cache/wanprep``
- macOS: ``~/Library/Caches/wanprep``
- Windows: ``%LOCALAPPDATA%\\wanprep\\Cache``

``$WANPREP_CACHE`` replaces the root; ``$WANPREP_MODELS`` (or ``--models-dir``) the models folder.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["MODELS_ENV", "CACHE_ENV", "user_cache_dir", "models_dir", "fp16_cache_dir"]

MODELS_ENV = "WANPREP_MODELS"
CACHE_ENV = "WANPREP_CACHE"


def user_cache_dir(platform: str | None = None, environ=None) -> Path:
    """The cache root (see the module docstring); ``platform`` / ``environ`` for tests."""
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    platform = sys.platform if platform is None else platform
    home = Path(env.get("HOME") or os.path.expanduser("~"))
    if platform == "darwin":
        return home / "Library" / "Caches" / "wanprep"
    if platform.startswith("win"):
        local = env.get("LOCALAPPDATA")
        return (Path(local) if local else home / "AppData" / "Local") / "wanprep" / "Cache"
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg and os.path.isabs(xdg) else home / ".cache") / "wanprep"


def models_dir(explicit=None, environ=None) -> Path:
    """The models folder: ``explicit`` (``--models-dir``), else ``$WANPREP_MODELS``, else
    ``<cache root>/models``."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return Path(explicit).expanduser()
    if env.get(MODELS_ENV):
        return Path(env[MODELS_ENV]).expanduser()
    return user_cache_dir(environ=env) / "models"


def fp16_cache_dir(environ=None) -> Path:
    """Where FP16 copies of models are kept, one per source model's content."""
    return user_cache_dir(environ=environ) / "fp16"
