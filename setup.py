"""The package build's one addition to pyproject.toml: the wheel carries the built
meeting page. ``build_py`` runs ``npm ci`` and esbuild in ``web/``
(:func:`actors.webbuild.build_web`) when ``actors/gateway/static/meeting.js`` is missing,
so ``pip wheel .`` (or ``python -m build``) from a clone or an sdist needs Node.js and
npm; an editable install skips it (``rooms web build`` does it there)."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithPage(build_py):
    """``build_py`` that builds the meeting page first when it is not built."""

    def run(self):
        page = ROOT / "actors" / "gateway" / "static" / "meeting.js"
        if not page.is_file() and not getattr(self, "editable_mode", False):
            # the module alone (stdlib only): the build environment has no Ray
            spec = importlib.util.spec_from_file_location(
                "_rooms_webbuild", ROOT / "actors" / "webbuild.py")
            webbuild = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(webbuild)
            webbuild.build_web(echo=lambda line: print(line, flush=True))
        super().run()


setup(cmdclass={"build_py": BuildPyWithPage})
