"""pst_yolo: the Pyramid Sparse Transformer (PST) neck as a plugin for Ultralytics YOLO.

``import pst_yolo`` registers PST with Ultralytics (idempotent): YAML rows naming ``PST`` build, the configs
(``yolo11{n,s,m,l,x}-pst.yaml``, ``yolo12n-pst.yaml`` ...) and ``data=shapes`` resolve by bare name. Checkpoints
pickle ``pst_yolo.nn.pst.PST``, so unpickling one imports (and registers) the plugin by itself.
"""

from .explain import explain
from .hooks import register
from .nn import PST, PSTAttention, PSTBlock
from .topk import get_topk, set_topk

__version__ = "0.1.0"
__all__ = ("PST", "PSTAttention", "PSTBlock", "__version__", "explain", "get_topk", "register", "set_topk")

register()
