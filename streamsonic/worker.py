"""``python -m streamsonic.worker``: one worker process of ``daemon.workers`` (the daemon
starts it and speaks to it over pipes; see :mod:`streamsonic.workers`)."""

import sys

from streamsonic.workers import worker_main

if __name__ == "__main__":
    sys.exit(worker_main())
