"""Training: MIDI datasets, the training loop and baselines (shares only network and encoding)."""
