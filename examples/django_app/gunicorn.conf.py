# gunicorn.conf.py: loopkeeper drains each worker as it exits (SIGTERM, --max-requests)
from loopkeeper.contrib.gunicorn import post_worker_init, worker_exit  # noqa: F401

# Both above loopkeeper's SHUTDOWN_TIMEOUT (10 s by default) + 1 s of grace:
graceful_timeout = 30  # how long the master waits for its workers after SIGTERM
timeout = 30  # a worker silent this long (a drain sends no heartbeat) is aborted
