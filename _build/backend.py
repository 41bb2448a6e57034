"""In-tree PEP 517 backend: meson-python by default, setuptools when HPR_BUILD_BACKEND=setuptools.

Both builds compile the same extension from the same source list (csrc/sources.txt): meson.build and
setup.py each read that file. Usage: ``HPR_BUILD_BACKEND=setuptools pip install .``
"""
import os

_choice = os.environ.get("HPR_BUILD_BACKEND", "meson").strip().lower()
if _choice in ("meson", "mesonpy", "meson-python", ""):
    from mesonpy import *  # noqa: F401,F403
    from mesonpy import build_sdist, build_wheel  # noqa: F401
    try:
        from mesonpy import build_editable, get_requires_for_build_editable  # noqa: F401
    except ImportError:  # older meson-python
        pass
elif _choice == "setuptools":
    from setuptools.build_meta import *  # noqa: F401,F403
else:
    raise RuntimeError(
        f"HPR_BUILD_BACKEND={_choice!r} is not a build backend hpr knows; use 'meson' (default) or 'setuptools'"
    )
