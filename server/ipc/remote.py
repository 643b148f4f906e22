"""What a remote worker (``zplex worker``) and its front agree on: key file names and
heartbeats."""

from __future__ import annotations

#: The front's key pair and the workers' public keys (``zplex keys DIR``).
FRONT_KEY = "front.key"
FRONT_KEY_SECRET = "front.key_secret"
WORKER_KEY_SECRET = "worker.key_secret"
#: How often the front and a remote worker tell each other they are alive, and how long a
#: silence means the other side is gone.
HEARTBEAT_INTERVAL_S = 1.0
REMOTE_SILENCE_S = 5.0
