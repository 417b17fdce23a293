"""The room runtime on Ray: each room is one actor (:mod:`actors.room_actor`) that owns
its state and storage, reached through a gateway Serve application
(:mod:`actors.gateway`); the command line is :mod:`actors.cli` (``rooms``)."""
