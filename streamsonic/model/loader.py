"""Load the configured pitch model and build its stepper on the configured device."""

from __future__ import annotations

import logging

import numpy as np

from streamsonic.config import ModelConfig
from streamsonic.encoding import PitchEncoding
from streamsonic.model.checkpoint import Checkpoint, default_weights, load_checkpoint
from streamsonic.model.stepper import PitchStepper, make_stepper, resolve_device

log = logging.getLogger(__name__)


def load_pitch_model(config: ModelConfig) -> tuple[PitchStepper, PitchEncoding, Checkpoint]:
    """The stepper, encoding and checkpoint for ``config.weights`` (default: shipped)."""
    path = config.weights or default_weights("pitch")
    ckpt = load_checkpoint(path, kind="pitch")
    device = resolve_device(config.device)
    stepper = make_stepper(ckpt.pitch_network(), device)
    # Warm up (compiles or loads the CPU kernels, initialises CUDA) so that the first
    # sample does not wait for it.
    state = stepper.initial_state(1)
    _, pending = stepper.propose(np.zeros(1), state)
    stepper.commit(pending, np.zeros(1))
    log.info("pitch model %s on %s (%d classes, MIDI %d..%d)", path, device, len(ckpt.classes),
             min(ckpt.classes), max(ckpt.classes))
    if ckpt.weights_sha256 is None:
        log.info("%s has no weights checksum (saved before checksums): damage to it cannot be "
                 "detected; re-save it with this version", path)
    return stepper, PitchEncoding(ckpt.classes), ckpt
