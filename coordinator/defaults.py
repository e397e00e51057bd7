"""Defaults shared by the server, the scheduler and the command line (no heavy imports here)."""

DEFAULT_LISTEN = "127.0.0.1:50051"
# Seconds a lease lives without a heartbeat; trainers heartbeat well within it.
DEFAULT_LEASE_TTL_S = 60.0
# Long-polling trainers and watch streams each hold a server thread; threads start lazily.
DEFAULT_MAX_WORKERS = 512
