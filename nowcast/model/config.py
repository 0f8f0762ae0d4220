"""Hyper-parameters of a NiNo meta-model (:class:`NiNoConfig`).

The defaults are the published defaults of the NiNo authors' model (``docs/design.md``, "NiNo");
:meth:`NiNoConfig.from_official_args` resolves the ``model_args`` dictionary stored in the
published checkpoints (which lists only the arguments that differ from those defaults).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["NiNoConfig", "without_retired"]

log = logging.getLogger(__name__)

# Official constructor arguments that only affect where/how memory is used, not the math.
_OFFICIAL_IGNORED = frozenset({"chunk_size", "message_passing_device"})
# Official constructor arguments with only one supported value (the published one).
_OFFICIAL_FIXED: dict[str, Any] = {
    "dms": True,
    "residual": True,
    "input_layer": "linear",
    "improved_graph": True,
    "act_name": "silu",
}
# Official name -> our field name, where they differ.
_OFFICIAL_RENAMED = {"max_seq_len": "seq_len"}


# Settings of retired experiments (conditioning on the training regime and a regime adapter; a
# landing term in the meta-training loss: docs/research/) that earlier checkpoints and work
# folders stored, with the value meaning "not used". This is the one place they are named: a
# config that has them off loads as before; one that has them on is refused.
RETIRED_MODEL_OFF: dict[str, Any] = {
    "lr_interval_input": False,
    "lr_interval_ceiling": None,
    "lr_interval_floor": None,
    "regime_adapter": False,
}
RETIRED_METATRAIN_OFF: dict[str, Any] = {**RETIRED_MODEL_OFF, "trainable": "all", "landing_weight": 0.0}


def without_retired(values: Mapping[str, Any], retired: Mapping[str, Any] = RETIRED_MODEL_OFF) -> dict[str, Any]:
    """``values`` without the retired settings in ``retired`` (``ValueError`` if one is on)."""
    kept = dict(values)
    used = []
    for key, off in retired.items():
        if key in kept and kept.pop(key) != off:
            used.append(f"{key}={values[key]!r}")
    if used:
        raise ValueError(
            f"this configuration uses a retired experiment ({', '.join(used)}); this version reads only "
            "models without it (see docs/research/README.md)"
        )
    return kept


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class NiNoConfig:
    """Architecture of a NiNo model.

    Attributes:
        ctx: number of past parameter states the model sees (edge feature length per slot).
        hid: hidden size of node and edge embeddings.
        layers: message-passing layers of the GNN variant (ignored when ``gnn`` is False).
        gnn: True for NiNo (graph network), False for WNN+ (per-parameter MLP, no graph).
        max_feat_size: feature slots per edge the model was built for (9 = 3x3 kernels).
        seq_len: number of forecast horizons ``k = 1..seq_len`` the head predicts.
        edge_types: size of the edge-type vocabulary (0 disables the edge-type embedding).
        lpe: Laplacian positional-encoding columns fed to the node embedding (GNN only).
        wte_pos_enc: add a learned embedding of the node's token id (``pos_w``) (GNN only).
        vocab_size: largest token id for ``wte_pos_enc`` (the table has ``vocab_size + 1`` rows).
        final_edge_update: also update edges after the last layer (the published models do not).
        mlp_layers: linear layers of the WNN+ MLP after the input projection.
    """

    ctx: int = 5
    hid: int = 128
    layers: int = 3
    gnn: bool = True
    max_feat_size: int = 9
    seq_len: int = 40
    edge_types: int = 15
    lpe: int = 8
    wte_pos_enc: bool = True
    vocab_size: int = 50257
    final_edge_update: bool = False
    mlp_layers: int = 4

    def __post_init__(self) -> None:
        for name in ("ctx", "hid", "layers", "max_feat_size", "seq_len", "mlp_layers"):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ValueError(f"NiNoConfig.{name} must be a positive integer, got {value!r}")
        for name in ("edge_types", "lpe", "vocab_size"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"NiNoConfig.{name} must be a non-negative integer, got {value!r}")
        for name in ("gnn", "wte_pos_enc", "final_edge_update"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"NiNoConfig.{name} must be a bool, got {getattr(self, name)!r}")
        if self.gnn and self.lpe == 0 and not self.wte_pos_enc:
            raise ValueError("a GNN NiNo model needs node features: set lpe > 0 or wte_pos_enc=True")

    @property
    def num_edge_updates(self) -> int:
        """Number of edge-update blocks of the GNN (``layers - 1`` unless ``final_edge_update``)."""
        if not self.gnn:
            return 0
        return self.layers if self.final_edge_update else self.layers - 1

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON dictionary of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> NiNoConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``.

        Keys of a retired experiment that earlier checkpoints wrote with their "off" value are
        dropped (:data:`RETIRED_MODEL_OFF`); the same keys switched on raise ``ValueError``.
        """
        values = without_retired(values)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown NiNoConfig fields: {', '.join(unknown)}")
        return cls(**dict(values))

    @classmethod
    def from_official_args(cls, model_args: Mapping[str, Any] | None) -> NiNoConfig:
        """Resolve the ``model_args`` of a published checkpoint over the published defaults.

        Memory-only arguments (``chunk_size``, ``message_passing_device``) are ignored;
        arguments selecting unsupported variants (``dms=False``, ``residual=False``, a
        non-linear input layer, the old graph, another activation) and unknown arguments raise
        ``ValueError``.
        """
        values: dict[str, Any] = {}
        problems: list[str] = []
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in dict(model_args or {}).items():
            if key in _OFFICIAL_IGNORED:
                log.debug("ignoring official model argument %s=%r (memory layout only)", key, value)
                continue
            if key in _OFFICIAL_FIXED:
                if value != _OFFICIAL_FIXED[key]:
                    problems.append(f"{key}={value!r} (only {_OFFICIAL_FIXED[key]!r} is supported)")
                continue
            name = _OFFICIAL_RENAMED.get(key, key)
            if name == "gnn":
                value = value not in (False, None, "None", "none")
            elif name == "max_feat_size" and value is None:
                value = 1
            if name not in known or name == "mlp_layers":
                problems.append(f"{key}={value!r} (unknown argument)")
                continue
            values[name] = value
        if problems:
            raise ValueError("unsupported NiNo model arguments: " + "; ".join(problems))
        return cls(**values)
