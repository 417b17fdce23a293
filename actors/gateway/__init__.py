"""The gateway: a Ray Serve application (FastAPI ingress) between clients and room actors.

Sockets live here, never in a room actor. One concept per module:

==================  ======================================================================
module              what it holds
==================  ======================================================================
``app``             the Serve deployment :class:`Gateway` and its FastAPI routes
``server``          :class:`GatewayServer`: the routes' logic in one replica (identity,
                    room id, the error table), as a plain class
``websocket``       one client WebSocket from handshake to close; its close codes
``client_socket``   :class:`ClientSocket`: one accepted socket, its send queue and its
                    :class:`SocketState`
``channel``         :class:`RoomChannel`: one room in one replica: its sockets, batched
                    ``deliver`` calls, the ordered merge of results, the long-poll
``registry``        :class:`RoomRegistry`: the channels and room references of a replica
``room_ref``        :class:`RoomRef`: calls into one room actor, retried across deaths
``ratelimit``       :class:`TokenBucket`: the per-connection rate limit
``limits``          :class:`GatewayLimits` (``ROOMS_GATEWAY_*``) and the close codes
``errors``          the one table from error to HTTP status and close code
``deploy``          :func:`deploy_gateway` / :func:`shutdown_gateway`, Serve's ingress
``haproxy``         :func:`reap_orphan_haproxy`
``proxy_callback``  Serve's proxy callback: the replicas' WebSocket limits in Serve's
                    proxy actor
==================  ======================================================================

Routes and the path of a frame are described in ``docs/architecture.md``. Every route
but ``/healthz`` needs an identity (:mod:`actors.auth`).
"""

from .app import Gateway, app
from .channel import RoomChannel
from .client_socket import ClientSocket, SocketState
from .deploy import SERVE_INGRESS_ENV, GatewayIngress, deploy_gateway, shutdown_gateway
from .errors import Answer, answer_for
from .haproxy import reap_orphan_haproxy
from .limits import (CLOSE_POLICY, CLOSE_ROOM_UNAVAILABLE, CLOSE_TRY_AGAIN, GatewayLimits,
                     REPLICA_HEADER)
from .ratelimit import TokenBucket
from .registry import RoomRegistry
from .room_ref import RoomRef
from .server import GatewayServer
from ..errors import RoomUnavailable

__all__ = [
    "Answer",
    "CLOSE_POLICY",
    "CLOSE_ROOM_UNAVAILABLE",
    "CLOSE_TRY_AGAIN",
    "ClientSocket",
    "Gateway",
    "GatewayIngress",
    "GatewayLimits",
    "GatewayServer",
    "REPLICA_HEADER",
    "RoomChannel",
    "RoomRef",
    "RoomRegistry",
    "RoomUnavailable",
    "SERVE_INGRESS_ENV",
    "SocketState",
    "TokenBucket",
    "answer_for",
    "app",
    "deploy_gateway",
    "reap_orphan_haproxy",
    "shutdown_gateway",
]
