"""Identifier types and their constructors (node, request, model ids)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import NewType

NodeId = NewType("NodeId", str)
RequestId = NewType("RequestId", str)
ModelId = NewType("ModelId", str)


def new_request_id() -> RequestId:
    """A random 96-bit request id, hex encoded."""
    return RequestId(secrets.token_hex(12))


def model_id_from(name: str, sha256_hex: str) -> ModelId:
    """Model id = file name + the first 16 hex digits of its sha256."""
    return ModelId(f"{name}@{sha256_hex[:16]}")


# --- node keys: ids that are keys ------------------------------------------------------

#: a node's public key in cards, addresses and ZAP's User-Id: 32 bytes as 64 hex digits
PUBLIC_HEX = 64


def node_id_of(public: str) -> NodeId:
    """The node id a public key (hex) derives: the first 16 hex digits of its sha256.

    Ids are keys: a node cannot choose its id, and a card whose id is not its key's is
    refused (core/claims.py); every link to a node is pinned to its key (net/security.py).
    """
    return NodeId(hashlib.sha256(bytes.fromhex(public)).hexdigest()[:16])


def is_public(text: str) -> bool:
    """Is this a public key as cards carry it (64 lowercase hex digits)?"""
    return len(text) == PUBLIC_HEX and all(c in "0123456789abcdef" for c in text)


@dataclass(frozen=True)
class NodeKey:
    """A node's CURVE keypair (hex): its identity. The secret never leaves the state dir."""

    public: str
    secret: str

    @property
    def node_id(self) -> NodeId:
        return node_id_of(self.public)

    def __repr__(self) -> str:  # never print the secret
        return f"NodeKey(node_id={self.node_id})"


#: how an address names the key it must answer with: tcp://HOST:PORT?key=PUBLIC
KEY_MARK = "?key="


def pinned(endpoint: str, public: str) -> str:
    """A node's address: its endpoint and the key it answers with (what node.json,
    ``zswarm peers`` and the start-up banner show, and what ``--node`` and
    ``[federation] peers`` take)."""
    return f"{endpoint}{KEY_MARK}{public}" if public else endpoint


def unpinned(address: str) -> tuple[str, str]:
    """An address -> (endpoint, public key or "" when it names none)."""
    endpoint, mark, public = address.partition(KEY_MARK)
    return endpoint, public.lower() if mark else ""
