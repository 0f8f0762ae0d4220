"""nowcast: NiNo parameter nowcasting (model, baselines, optimizer wrapper) — being built.

See DESIGN.md section 4. The package is importable so that the distribution's layout is stable.
"""

from .checkpoint import CheckpointError, load, save
from .config import NiNoConfig
from .model import NiNoEmbedding, NiNoModel
from .scaling import LayerScales, param_sizes, scale_states, unscale

__all__ = [
    "CheckpointError",
    "LayerScales",
    "NiNoConfig",
    "NiNoEmbedding",
    "NiNoModel",
    "load",
    "param_sizes",
    "save",
    "scale_states",
    "unscale",
]
