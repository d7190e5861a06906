"""`streamsonic train` (placeholder until its issue lands)."""

from __future__ import annotations

import argparse

from streamsonic.errors import UsageError


def configure(parser: argparse.ArgumentParser) -> None:
    """No options yet."""


def main(args: argparse.Namespace) -> int:
    """Not built yet."""
    raise UsageError("'streamsonic train' is not part of this build yet")
