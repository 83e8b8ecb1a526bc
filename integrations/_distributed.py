"""Rank 0 decides, every rank follows: one place for the rule of distributed runs.

In a data-parallel run only rank 0 reads and writes the ledger (the incumbent
rule needs it), so only its decision counts. :func:`rank_zero_decides` runs the
work, sends rank 0's answer to every rank through the framework's broadcast, and
raises rank 0's failure on every rank, so that no rank waits for one that died
and all stop at the same epoch. Framework-free: the adapter hands in its
broadcast (Lightning's ``trainer.strategy.broadcast``, or :func:`torch_broadcast`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from earlystop_predict.errors import EarlystopPredictError

_T = TypeVar("_T")

Broadcast = Callable[[Any], Any]


def rank_zero_decides(work: Callable[[], _T], *, is_zero: bool, broadcast: Broadcast | None,
                      every_rank: bool = False) -> _T:
    """Rank 0's result of ``work``, on every rank.

    Args:
        work: what decides (feeds the monitor and returns its answer).
        is_zero: this process is rank 0.
        broadcast: sends an object from rank 0 and returns it on every rank; None
            for a single process (``work`` runs and its result is returned).
        every_rank: run ``work`` on every rank too (their monitors keep a record),
            rank 0's result still being the one returned. Default False.

    Raises:
        Exception: ``work``'s own error on the rank where it failed;
            :class:`~earlystop_predict.errors.EarlystopPredictError` on the other
            ranks when rank 0 failed.
    """
    payload: tuple[str, Any] = ("ok", None)
    error: Exception | None = None
    if is_zero or every_rank:
        try:
            payload = ("ok", work())
        except Exception as exc:  # noqa: BLE001 - raised below, after the ranks agree
            error = exc
            payload = ("error", f"{type(exc).__name__}: {exc}")
    if broadcast is not None:
        payload = broadcast(payload)
    if error is not None:
        raise error
    if payload[0] == "error":
        raise EarlystopPredictError(f"rank 0 failed: {payload[1]}")
    return payload[1]


def torch_broadcast(world_size: int) -> tuple[bool, Broadcast | None]:
    """``(is_zero, broadcast)`` over ``torch.distributed``'s default process group.

    ``(True, None)`` when the run is a single process or no group of ``world_size``
    processes is initialised.
    """
    if world_size < 2:
        return True, None
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - the frameworks that call this need torch
        return True, None
    if not (dist.is_available() and dist.is_initialized()
            and dist.get_world_size() == world_size):
        return True, None

    def broadcast(obj: Any) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    return dist.get_rank() == 0, broadcast


def lightning_rank_zero(trainer: Any, work: Callable[[], _T]) -> _T:
    """:func:`rank_zero_decides` with a Lightning ``Trainer``'s rank and broadcast."""
    broadcast = trainer.strategy.broadcast if trainer.world_size > 1 else None
    return rank_zero_decides(work, is_zero=trainer.is_global_zero, broadcast=broadcast)
