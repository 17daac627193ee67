"""The package's docstring examples run as doctests.

They are run from the imported ``wanprep_torch`` package rather than by pytest's
``--doctest-modules``: the repository root is itself a ComfyUI custom node (it has an
``__init__.py``), so pytest would import the package's files a second time under the root
folder's name, and an object made by one copy would not be an instance of the other's classes.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import wanprep_torch

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(wanprep_torch.__path__, "wanprep_torch.")
    if m.name not in ("wanprep_torch.__main__",)
)


def _examples(name: str) -> list[doctest.DocTest]:
    module = importlib.import_module(name)
    return [t for t in doctest.DocTestFinder().find(module) if t.examples]


DOCTESTS = [(name, t) for name in MODULES for t in _examples(name)]


def test_examples_are_found():
    # The modules known to carry examples: a finder that silently found none would pass.
    found = {name for name, _ in DOCTESTS}
    for name in ("wanprep_torch.draw", "wanprep_torch.detect", "wanprep_torch.pose", "wanprep_torch.raster"):
        assert name in found, f"no docstring examples found in {name}"


@pytest.mark.parametrize("test", [t for _, t in DOCTESTS], ids=[t.name for _, t in DOCTESTS])
def test_docstring_example(test):
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{test.name}: {result.failed} of {result.attempted} examples failed (output above)"
