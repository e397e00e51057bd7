"""Defaults shared by the server, the scheduler and the command line (no heavy imports here)."""

from taylorglo_tf.connection import DEFAULT_ADDRESS

DEFAULT_LISTEN = DEFAULT_ADDRESS  # where clients look for a coordinator by default
# Seconds a lease lives without a heartbeat; trainers heartbeat well within it.
DEFAULT_LEASE_TTL_S = 60.0
# A lease whose heartbeats report no new training step (HeartbeatRequest.steps_done) for this
# many TTLs (10 min at the default TTL) ends like a silent one: its trainer is stuck. Until the
# first step the allowance is twice that, for loading data and compiling (XLA) before training.
PROGRESS_DEADLINE_TTLS = 10.0
STARTUP_PROGRESS_FACTOR = 2.0
# Threads for calls other than LeaseCandidate (whose long polls hold none); a watch
# stream holds one while it lasts. Threads start lazily.
DEFAULT_MAX_WORKERS = 512
# Threads for the scheduler calls of LeaseCandidate coroutines: each call is short (the
# scheduler's lock and one transaction); more threads would only queue on that lock.
LEASE_THREADS = 4
# Calls that may wait for the event loop to take them up (a burst of reports when a
# generation ends on thousands of trainers); grpc's default of 1,000 cancels the rest.
MAX_PENDING_CALLS = 20_000
# How long a database write waits for a lock another process holds (a backup, someone's sqlite3
# shell) before it fails UNAVAILABLE: short, because the write waits holding the scheduler's lock.
DB_BUSY_TIMEOUT_S = 0.25
# After a write found the database locked, writes fail at once for this long rather than each
# waiting out the busy timeout again; the first write after it tries the database again.
DB_LOCKED_RETRY_S = 1.0
# Seconds of recent history a trainer's candidate-steps/s and an experiment's rate (and ETA) are measured over.
RATE_WINDOW_S = 120.0
# A lost trainer stays in the fleet view this long after its last call, then is forgotten (trainers
# restarted under new ids would otherwise grow the view, and GetFleet's answer, without end).
FORGET_LOST_TRAINER_S = 24 * 3600.0
