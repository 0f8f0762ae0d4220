"""Node groups: named runs of consecutive node ids that share one role."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NodeGroup", "NodeRange", "ROLES"]

ROLES = (
    "input",  # model input features / channels
    "hidden",  # hidden units of an MLP or conv channels
    "output",  # model outputs
    "bias",  # the node of one 1-D parameter (bias, norm scale)
    "stream",  # residual-stream features
    "token",  # vocabulary tokens
    "position",  # positions of a position embedding
    "query_key",  # attention query/key units
    "value",  # attention value units
    "head",  # one node per attention head
    "all",  # pseudo group spanning every node (self-loops)
)
"""The node roles converters use (``docs/design.md``, "Graph semantics")."""


@dataclass(frozen=True)
class NodeGroup:
    """A named run of ``size`` consecutive nodes starting at global id ``start``.

    ``tokens=True`` marks vocabulary nodes: their ``pos_w`` feature is the token id + 1.
    Index a group with a slice (``group[0:4]``) to get a :class:`NodeRange` of some of its nodes.
    """

    name: str
    start: int
    size: int
    role: str
    tokens: bool = False

    @property
    def stop(self) -> int:
        return self.start + self.size

    @property
    def nodes(self) -> "NodeRange":
        return NodeRange(self.name, self.start, 0, self.size)

    def __getitem__(self, index: slice) -> "NodeRange":
        if not isinstance(index, slice):
            raise TypeError(f"node group '{self.name}': index with a slice, e.g. group[0:4]")
        lo, hi, step = index.indices(self.size)
        if step != 1:
            raise ValueError(f"node group '{self.name}': ranges must be contiguous (step 1)")
        return NodeRange(self.name, self.start, lo, max(0, hi - lo))


@dataclass(frozen=True)
class NodeRange:
    """Nodes ``lo .. lo+size`` (local ids) of the group ``group`` that starts at ``group_start``."""

    group: str
    group_start: int
    lo: int
    size: int

    @property
    def start(self) -> int:
        """Global id of the first node."""
        return self.group_start + self.lo

    @property
    def stop(self) -> int:
        return self.start + self.size

    def __str__(self) -> str:
        return self.group if self.lo == 0 else f"{self.group}[{self.lo}:{self.lo + self.size}]"


def as_range(nodes: "NodeGroup | NodeRange") -> NodeRange:
    """Accept a whole group or a range of one."""
    if isinstance(nodes, NodeGroup):
        return nodes.nodes
    if isinstance(nodes, NodeRange):
        return nodes
    raise TypeError(f"expected a NodeGroup or NodeRange, got {type(nodes).__name__}")
