"""The NiNo network: its configuration, layers, checkpoint format and reader."""

from .checkpoint import check_state_dict, load_model
from .config import NiNoConfig
from .files import save_model
from .network import DEFAULT_EDGE_CHUNK, NiNoEmbedding, NiNoModel

__all__ = ["DEFAULT_EDGE_CHUNK", "NiNoConfig", "NiNoEmbedding", "NiNoModel", "check_state_dict", "load_model", "save_model"]
