"""Identifier types and their constructors (node, request, model ids)."""

from __future__ import annotations

import secrets
from typing import NewType

NodeId = NewType("NodeId", str)
RequestId = NewType("RequestId", str)
ModelId = NewType("ModelId", str)


def new_request_id() -> RequestId:
    """A random 96-bit request id, hex encoded."""
    return RequestId(secrets.token_hex(12))


def new_node_id() -> NodeId:
    """A random 64-bit node id, hex encoded (persisted by the node in its state dir)."""
    return NodeId(secrets.token_hex(8))


def model_id_from(name: str, sha256_hex: str) -> ModelId:
    """Model id = file name + the first 16 hex digits of its sha256."""
    return ModelId(f"{name}@{sha256_hex[:16]}")
