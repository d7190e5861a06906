"""`python -m streamsonic` runs the command line."""

import sys

from streamsonic.cli import main

sys.exit(main())
