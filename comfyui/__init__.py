"""ComfyUI custom-node entry for wanprep_torch (the torch-native WanAnimatePreprocess nodes).

Symlink or copy this folder into ComfyUI/custom_nodes/ (under a name other than
"wanprep_torch", which would shadow the package) after `pip install -e /path/to/repo`.
Without the install, the repository this folder sits in (found through symlinks) is put on
sys.path instead.
"""

import sys
from pathlib import Path

try:
    from wanprep_torch.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
except ModuleNotFoundError as _exc:
    if _exc.name != "wanprep_torch":
        raise  # installed, but one of its dependencies is missing: show that
    _repo = Path(__file__).resolve().parent.parent
    if not (_repo / "wanprep_torch" / "comfy.py").is_file():
        raise ImportError(
            "wanprep_torch is not installed: run `pip install -e /path/to/wanprep_torch` in ComfyUI's Python"
        ) from _exc
    sys.path.insert(0, str(_repo))
    from wanprep_torch.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
