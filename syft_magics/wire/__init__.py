"""The wire: what client and worker say to each other, and how they find and trust each other.

- :mod:`.protocol`: the message schema (msgpack header + raw tensor frames), the message kinds
- :mod:`.names`: how ops and tags are spelled on the wire
- :mod:`.auth`: keys and the HMAC challenge-response
- :mod:`.sockets`: the socket calls on the hot path
- :mod:`.discovery`: connection files (find a worker by name or address)

Both sides import from here; nothing here imports either side.
"""
from . import auth, discovery, names, protocol, sockets

__all__ = ["auth", "discovery", "names", "protocol", "sockets"]
