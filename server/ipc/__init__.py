"""Messages between the front and its workers over ZeroMQ, shared by both sides.

``envelope``: the fixed header of every message and its kinds; ``messages``: one codec per
control payload and per part; ``batch``: many messages in one ZeroMQ message; ``flow``: the
per-stream credit both sides keep; ``remote``: what a remote worker and its front agree on.
Sans I/O: these modules import only the protocol core.
"""
