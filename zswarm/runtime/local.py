"""A node's local part: its models, their workers, a coordinator (no network).

``build_models`` makes the node's ``Models`` (runtime/models.py) from its config: the
``[model]`` or ``[[models]]`` entries and the GGUF files of ``[node] models_dir``, each
file checked and its id computed (an unknown file fails here), its memory estimated,
its workers built on each load; a ``swarm:`` model not pulled yet (``Remote``) is
pulled by its first load. ``serving(ctx, models)`` runs them for the duration of
a block and marks the node ready once the models to preload are loaded; the
composition root (zswarm/node.py) builds its servers around it.
``local_node(config)`` is the whole local part on its own,
for ``zswarm ask --local``, tests and benches. ``single_errors`` unwraps the one
error a failed start-up leaves in trio's exception groups, so callers see a
ConfigError or ModelNotFound, not a group.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import trio

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

import msgspec
import psutil

from zswarm.config import Config, ModelEntry
from zswarm.core.catalog import file_name
from zswarm.core.messages import MAX_MODELS, NodeCard
from zswarm.engines.loader import model_file, model_id
from zswarm.engines.models import estimate_mib
from zswarm.errors import ConfigError, ModelNotFound, ZswarmError
from zswarm.net.guard import DropCounter, FrameDrops
from zswarm.runtime.context import NodeContext, NoPeers
from zswarm.runtime.coordinator import Coordinator
from zswarm.runtime.models import Models, Pool, Resident
from zswarm.runtime.scheduler import Scheduler
from zswarm.runtime.stats import NodeStats
from zswarm.runtime.workers import WorkerPool

log = logging.getLogger(__name__)

#: the memory budget when [node] memory_budget_mib is 0: this share of what is available
BUDGET_SHARE = 0.75


class Servable(Protocol):
    async def serve(self, *, task_status: trio.TaskStatus[object] = ...) -> None: ...


@dataclass
class LocalNode:
    ctx: NodeContext
    coordinator: Coordinator

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def scheduler(self) -> Scheduler:
        """The default model's (loaded while the block runs)."""
        return self.ctx.models.default.scheduler

    @property
    def pool(self) -> Pool:
        """The default model's workers."""
        pool = self.ctx.models.default.pool
        assert pool is not None
        return pool


def entries(config: Config) -> list[ModelEntry]:
    """The configured models, then the GGUF files of ``[node] models_dir`` that no entry
    names (each named by its file name without .gguf, with ``[model]``'s settings,
    loaded on demand)."""
    out = config.entries()
    folder = config.node.models_dir
    if not folder:
        return out
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{config.source}: node.models_dir: {path} is not a directory")
    named = {Path(e.path).expanduser().resolve() for e in out if e.path != "default"}
    found = sorted(p for p in path.glob("*.gguf") if p.is_file() and p.resolve() not in named)
    settings = msgspec.structs.asdict(config.model)
    if len(out) + len(found) > MAX_MODELS:
        log.warning("node.models_dir: %d GGUF files in %s; a node serves at most %d models, "
                    "so %d are left out", len(found), path, MAX_MODELS,
                    len(out) + len(found) - MAX_MODELS)
        found = found[:max(0, MAX_MODELS - len(out))]
    return out + [ModelEntry(**{**settings, "path": str(p)}, name=p.name[:-5][:64])
                  for p in found]


def resident(config: Config, entry: ModelEntry, *, stats: NodeStats | None,
             drops: DropCounter | None) -> Resident:
    """One configured model: its file checked, its id and memory; workers made per load."""
    cfg = config.for_model(entry)
    file = model_file(cfg.model)
    mid = file.model_id if file is not None else model_id(cfg.model)
    name = entry.name or (file.path.name.removesuffix(".gguf") if file else mid)
    workers = cfg.node.workers
    estimate = estimate_mib(file, n_ctx=cfg.model.n_ctx, workers=workers) if file else 0

    def make_pool() -> WorkerPool:
        return WorkerPool(cfg, Scheduler(max_queue=config.scheduler.max_queue), mid,
                          drops=drops, stats=stats)

    return Resident(name[:64], mid, msgspec.structs.replace(entry, workers=workers), estimate,
                    make_pool, file)


@dataclass(frozen=True)
class Remote:
    """A ``swarm:`` model that is not here yet: its id (the members that hold it told it)
    and how to pull it (blocking; the file's sha256 checked against the id)."""

    model_id: str
    #: the members to pull it from (RPC endpoints; read in the node's trio thread)
    members: Callable[[], list[str]]
    #: pulls it from those members (blocking), returning where the file is
    pull: Callable[[list[str]], Path]


def remote_resident(config: Config, entry: ModelEntry, remote: Remote, *,
                    stats: NodeStats | None, drops: DropCounter | None) -> Resident:
    """A model pulled by its first load: until then no file, no estimate, no workers."""

    def not_here() -> Pool:
        raise ModelNotFound(f"model {entry.name or remote.model_id} is not pulled yet")

    async def fetch(r: Resident) -> None:
        path = await trio.to_thread.run_sync(remote.pull, remote.members(),
                                             abandon_on_cancel=True)
        here = await trio.to_thread.run_sync(lambda: resident(
            config, msgspec.structs.replace(entry, path=str(path)), stats=stats, drops=drops))
        if here.model_id != r.model_id:  # pull.py checked the sha256: not expected
            raise ModelNotFound(f"model {r.name}: pulled {here.model_id}, not {r.model_id}")
        r.entry, r.file = here.entry, here.file
        r.estimate_mib, r.make_pool = here.estimate_mib, here.make_pool
        log.info("model %s pulled: %s (its sha256 matches the model's id)", r.name, path)

    name = entry.name or file_name(remote.model_id).removesuffix(".gguf")
    return Resident(name[:64], remote.model_id,
                    msgspec.structs.replace(entry, workers=config.for_model(entry).node.workers),
                    0, not_here, fetch=fetch)


def build_models(config: Config, chosen: list[ModelEntry], *, stats: NodeStats | None = None,
                 drops: DropCounter | None = None,
                 remote: Mapping[int, Remote] | None = None) -> Models:
    """The node's models from its entries (blocking: files are read and hashed);
    ``remote``: the entries (by position) that are pulled by their first load."""
    residents: list[Resident] = []
    for i, entry in enumerate(chosen):
        later = (remote or {}).get(i)
        r = (resident(config, entry, stats=stats, drops=drops) if later is None
             else remote_resident(config, entry, later, stats=stats, drops=drops))
        same = next((o for o in residents if o.model_id == r.model_id or o.name == r.name),
                    None)
        if same is not None:
            raise ConfigError(f"{config.source}: models: {same.name!r} and {r.name!r} are "
                              f"{'one file' if same.model_id == r.model_id else 'one name'} "
                              f"({r.model_id}): give each model once, with its own name")
        residents.append(r)
    budget = config.node.memory_budget_mib or int(
        psutil.virtual_memory().available / 2**20 * BUDGET_SHARE)
    return Models(residents, budget_mib=budget, min_resident_s=config.node.min_resident_s,
                  max_waiting=config.scheduler.max_queue)


@contextmanager
def single_errors() -> Iterator[None]:
    """Unwrap an exception group that holds exactly one ZswarmError (trio wraps nursery errors)."""
    try:
        yield
    except BaseExceptionGroup as group:
        matched, rest = group.split(ZswarmError)
        if matched is not None and rest is None and len(matched.exceptions) == 1:
            leaf = matched.exceptions[0]
            while isinstance(leaf, BaseExceptionGroup) and len(leaf.exceptions) == 1:
                leaf = leaf.exceptions[0]
            if isinstance(leaf, ZswarmError):
                raise leaf from None
        raise


@asynccontextmanager
async def serving(ctx: NodeContext, models: Servable) -> AsyncIterator[None]:
    """The models to preload loaded and the others on demand, for the duration of the
    block; the node is ready inside it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(models.serve)
        ctx.ready()
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def local_node(config: Config) -> AsyncIterator[LocalNode]:
    """Workers loaded and a scheduler running, for the duration of the block."""
    with single_errors():
        stats = NodeStats()
        drops = FrameDrops()
        models = await trio.to_thread.run_sync(lambda: build_models(
            config, entries(config), stats=stats, drops=drops.counter("workers")))
        card = node_card(config, models, node_id="local", rpc="", pub="")
        ctx = NodeContext(config, card, models, stats=stats, drops=drops)
        async with serving(ctx, models):
            yield LocalNode(ctx, Coordinator(ctx, NoPeers()))


def node_card(config: Config, models: Models, **where: object) -> NodeCard:
    """The card of a node of these models (``where``: its id, endpoints, key...); a node
    of one model lists none (its ``model_id`` says it, as ever)."""
    held = models.held()
    return NodeCard(name=config.node.name, model_id=models.default.model_id,
                    workers=models.default.workers, swarm=config.federation.swarm,
                    models=held if len(held) > 1 else [], **where)  # type: ignore[arg-type]
