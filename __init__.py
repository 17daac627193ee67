"""ComfyUI custom-node entry: this repository's drop-in "WanAnimatePreprocess" nodes.

Install the usual way: ``git clone`` the repository into ``ComfyUI/custom_nodes/`` (any folder
name) and ``pip install -r requirements.txt`` in ComfyUI's Python. ComfyUI loads this file as a
module (named after the folder, or after its path in newer versions) and reads
``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS`` from it.

The nodes come from the ``wanprep_torch`` package next to this file, loaded under its own name
without touching ``sys.path`` (the repository's ``tests``, ``scripts`` and ``converters`` folders
would otherwise shadow other modules of those names). A ``wanprep_torch`` already imported in
the process (``pip install -e`` of this repository, the ``comfyui/`` symlink route) is used as it
is. Nothing is imported until the mappings are asked for, so tools that import this folder as a
package (pytest collects it as one) pay nothing.
"""

import importlib as _importlib
import importlib.util as _util
import os as _os
import sys as _sys

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]

_PACKAGE = "wanprep_torch"
_HERE = _os.path.dirname(_os.path.abspath(__file__))


def _is_package(module) -> bool:
    return any(_os.path.isfile(_os.path.join(d, "comfy.py")) for d in getattr(module, "__path__", None) or ())


def _load_package():
    """The ``wanprep_torch`` package: the one imported already, else the one beside this file."""
    loaded = _sys.modules.get(_PACKAGE)
    # An old ComfyUI names the custom-node module after its folder: a folder named
    # "wanprep_torch" is registered under the package's name while it loads, and is not it.
    if loaded is not None and _is_package(loaded):
        return loaded
    init = _os.path.join(_HERE, _PACKAGE, "__init__.py")
    if not _os.path.isfile(init):
        raise ImportError(f"{_PACKAGE} not found: expected the package folder {_os.path.dirname(init)}")
    spec = _util.spec_from_file_location(_PACKAGE, init, submodule_search_locations=[_os.path.dirname(init)])
    module = _util.module_from_spec(spec)
    _sys.modules[_PACKAGE] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if loaded is None:
            del _sys.modules[_PACKAGE]
        else:
            _sys.modules[_PACKAGE] = loaded
        raise
    return module


def __getattr__(name):
    if name in __all__:
        _load_package()
        nodes = _importlib.import_module(_PACKAGE + ".comfy")
        globals().update(NODE_CLASS_MAPPINGS=nodes.NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS=nodes.NODE_DISPLAY_NAME_MAPPINGS)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
