"""The swarm's models: who holds each one, and what name a request may use for it.

Owns: ``Holder`` (a node holding a model, as its card says: a claim, capped where cards
are read), ``catalog`` (each model once, with its holders: this node first) and
``resolve`` (a request's ``model`` -> one model id). A model is named by its id
(``file.gguf@sha256-prefix``), its file name, or its file name without ``.gguf``; an
id always wins, and a name that two models share (two files of one name on different
nodes) is refused naming their ids, never guessed. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from zswarm.core.messages import HeldModel, Load, ModelState, NodeCard, PeerInfo
from zswarm.errors import ModelNotFound, RequestRefused

#: the models a 404 lists at most
LISTED = 20
#: what a request may say for "this node's own model"
DEFAULT_NAMES = ("", "default", "zswarm")


@dataclass(frozen=True)
class Holder:
    node_id: str
    #: the node's name
    name: str
    #: the model's state there (runtime/models.py): "loaded" serves it now
    state: ModelState = "loaded"
    #: the name the node's config gives the model ("" = none)
    model_name: str = ""


def held_by(card: NodeCard | PeerInfo, load: Load) -> list[tuple[HeldModel, ModelState]]:
    """The models a node's card says it serves, each with its state from the node's last
    heartbeat: a card without a list serves its ``model_id``, loaded; states that do not
    match the list (a heartbeat from before a restart) say "unloaded"."""
    if not card.models:
        return [(HeldModel(model_id=card.model_id), "loaded")]
    unknown: list[ModelState] = ["unloaded"] * len(card.models)
    states = load.models if len(load.models) == len(card.models) else unknown
    return list(zip(card.models, states, strict=True))


def file_name(model_id: str) -> str:
    return model_id.split("@")[0]


def catalog(mine: Mapping[str, Holder], peers: Mapping[str, Sequence[Holder]]
            ) -> dict[str, list[Holder]]:
    """Model id -> its holders: this node's models first (its default first) and this
    node first among their holders."""
    out: dict[str, list[Holder]] = {model_id: [me] for model_id, me in mine.items()}
    me = next(iter(mine.values())).node_id if mine else ""
    for model_id, holders in peers.items():
        out.setdefault(model_id, []).extend(h for h in holders if h.node_id != me)
    return out


def _names(model_id: str, holders: Iterable[Holder]) -> tuple[str, ...]:
    name = file_name(model_id)
    names = (name, name.removesuffix(".gguf")) if name.endswith(".gguf") else (name,)
    return names + tuple(h.model_name for h in holders if h.model_name)


def resolve(name: str, own_model: str, models: Mapping[str, Iterable[Holder]], *,
            own: Mapping[str, str] | None = None) -> str:
    """The model id a request's ``model`` names (an id, a file name with or without
    .gguf, or the name a holder's config gives it): ModelNotFound (listing the models
    there are) if none, RequestRefused (field "model") if a name fits several. ``own``:
    the names this node's config gives its models (name -> id), which win over any
    other match but an id: a peer cannot make this node's own names ambiguous."""
    known = list(dict.fromkeys([own_model, *models]))
    if name in DEFAULT_NAMES or name == own_model:
        return own_model
    if name in known:
        return name
    if own and name in own:
        return own[name]
    matches = [m for m in known if name in _names(m, models.get(m, ()))]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise RequestRefused(f"model {name!r} names {len(matches)} models; use one of their "
                             f"ids: {', '.join(matches)}", field="model")
    shown = ", ".join(known[:LISTED]) + (f" and {len(known) - LISTED} more"
                                         if len(known) > LISTED else "")
    raise ModelNotFound(f"model {name!r} is not served by this swarm; it serves: {shown}")
