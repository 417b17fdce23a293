"""The system's side actors: the namespace's alarm scheduler (wakes hibernated rooms
whose alarm is due, :mod:`actors.scheduler`), a warm pool on every node
(:mod:`actors.warmpool`) and the metrics sink (:mod:`actors.metrics_sink`). All are detached named actors started with get-if-exists,
so starting them is idempotent and they outlive whoever started them; every gateway
replica of a Serve application built with ``side_actors`` makes sure they run
(:mod:`actors.gateway.application`)."""

from __future__ import annotations

import logging
import threading

from .config import RoomsConfig

__all__ = ["start_side_actors"]

log = logging.getLogger("ray_rooms.gateway")


def start_side_actors(config: RoomsConfig, *, background: bool = True) -> None:
    """Make sure the alarm scheduler of ``config.namespace``, a warm pool on every
    node and the metrics sink run (get-if-exists: idempotent; detached: they outlive this replica).

    Args:
        config: the rooms' settings (namespace, store, ``warm_workers``).
        background: do it on a daemon thread (a replica's constructor must not wait
            on the GCS); ``False``: here, now (tests).

    Raises nothing: a failure is logged and the next replica start tries again
    (without the scheduler, alarms of hibernated rooms wait; without a pool, rooms
    start cold).
    """
    def run() -> None:
        from .metrics_sink import ensure_sink
        from .scheduler import ensure_scheduler
        from .warmpool import ensure_warm_pools, preloads_ai

        try:
            ensure_scheduler(config)
        except Exception:  # noqa: BLE001 - logged; the next replica tries again
            log.exception("could not start the alarm scheduler")
        try:
            ensure_warm_pools(config.warm_workers, config.store_url,
                              ai=preloads_ai(config))
        except Exception:  # noqa: BLE001
            log.exception("could not start the warm pools")
        try:
            ensure_sink()
        except Exception:  # noqa: BLE001 - the first process that reports starts it
            log.exception("could not start the metrics sink")

    if background:
        threading.Thread(target=run, name="rooms-side-actors", daemon=True).start()
    else:
        run()
