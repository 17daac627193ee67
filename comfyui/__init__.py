"""ComfyUI custom-node entry for the symlink route (the torch-native WanAnimatePreprocess nodes).

Symlink or copy this folder into ComfyUI/custom_nodes/ after `pip install -e /path/to/repo`
(any link name). It hands over to the repository root's entry (found through symlinks), which
uses the installed ``wanprep_torch`` when it is imported already, else the package in the
repository, without touching ``sys.path``. A plain clone of the repository into
custom_nodes/ needs none of this: the root's ``__init__.py`` is the entry.
"""

import importlib.util as _util
from pathlib import Path as _Path

_root_init = _Path(__file__).resolve().parent.parent / "__init__.py"
if not _root_init.is_file():
    raise ImportError(
        f"{_root_init} not found: link this folder from a wanprep_torch repository (or clone the repository into custom_nodes/)"
    )
_spec = _util.spec_from_file_location("_wanprep_torch_custom_node_root", _root_init)
_root = _util.module_from_spec(_spec)
_spec.loader.exec_module(_root)

NODE_CLASS_MAPPINGS = _root.NODE_CLASS_MAPPINGS
NODE_DISPLAY_NAME_MAPPINGS = _root.NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
