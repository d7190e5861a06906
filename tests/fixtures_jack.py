"""JACK dummy-server fixtures (filled in by the live-outputs work)."""
