"""Sinks: where notes go. Each backend lives in its own module and is imported lazily."""
