"""Peer benchmarks: ray-rooms measured beside the system it is modelled on (issue 23).
See :mod:`benchmarks.peers.compare`."""
