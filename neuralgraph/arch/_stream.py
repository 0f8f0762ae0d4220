"""The residual stream of a transformer converter: one node group per write."""

from __future__ import annotations

from ..builder import GraphBuilder
from ..groups import NodeGroup


class Streams:
    """The residual stream as node groups ``stream.0``, ``stream.1``, ...: every write that adds to
    the stream (embeddings, an attention or MLP output with its residual) gets a new group of
    ``width`` units. ``stream.0`` is declared when the object is made."""

    def __init__(self, b: GraphBuilder, width: int) -> None:
        self.b = b
        self.width = width
        self.groups: list[NodeGroup] = []
        self.new()

    def new(self) -> NodeGroup:
        """Declare the next stream group and return it."""
        group = self.b.group(f"stream.{len(self.groups)}", self.width, role="stream")
        self.groups.append(group)
        return group

    @property
    def last(self) -> NodeGroup:
        return self.groups[-1]
