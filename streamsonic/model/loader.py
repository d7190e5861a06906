"""Load the configured pitch model and build its stepper on the configured device.

On the CPU nothing here imports torch: the weights come from the ``.npz`` beside the
checkpoint (:func:`streamsonic.model.arrays.arrays_for`) and the stepper is NumPy's. torch
is read only for CUDA, or for a checkpoint without an up-to-date ``.npz``.
"""

from __future__ import annotations

import logging

import numpy as np

from streamsonic.config import ModelConfig
from streamsonic.encoding import PitchEncoding
from streamsonic.model.arrays import ArrayCheckpoint, arrays_for, default_weights
from streamsonic.model.stepper import NumpyPitchStepper, PitchStepper, device_name, make_stepper
from streamsonic.residency import release_llvm_pages

log = logging.getLogger(__name__)

#: Whether this process gave numba's LLVM pages back yet (around its first model load: later
#: loads link no new kernels, so there is nothing to give back, and each look costs about
#: 10 ms of reading /proc/self/smaps).
_llvm_given_back = False


def load_pitch_model(config: ModelConfig) -> tuple[PitchStepper, PitchEncoding, ArrayCheckpoint]:
    """The stepper, encoding and checked weights for ``config.weights`` (default: shipped)."""
    path = config.weights or default_weights("pitch")
    device = device_name(config.device)
    global _llvm_given_back  # noqa: PLW0603 - once per process
    first = not _llvm_given_back
    # numba's LLVM: what its import touched (static initialisers) is not needed again, and
    # giving it back now keeps it out of the peak (see streamsonic.residency).
    released = release_llvm_pages() if first else 0
    ckpt, why = arrays_for(path, kind="pitch")
    if ckpt is None:  # a checkpoint without its .npz: torch reads it
        from streamsonic.model.checkpoint import load_checkpoint  # noqa: PLC0415 - torch

        loaded = load_checkpoint(path, kind="pitch")
        ckpt = ArrayCheckpoint(kind=loaded.kind, arch=loaded.arch, classes=loaded.classes,
                               arrays={k: v.numpy() for k, v in loaded.state_dict.items()},
                               seq_len=loaded.seq_len, meta=loaded.meta, path=loaded.path,
                               weights_sha256=loaded.weights_sha256)
        log.info("%s", why)
    stepper: PitchStepper = (NumpyPitchStepper(ckpt.arrays) if device == "cpu"
                             else make_stepper(ckpt.arrays, device))
    # Warm up (compiles or loads the CPU kernels, initialises CUDA) so that the first
    # sample does not wait for it.
    state = stepper.initial_state(1)
    _, pending = stepper.propose(np.zeros(1), state)
    stepper.commit(pending, np.zeros(1))
    # ... and what setting up its JIT and linking the kernels touched: peak RSS of
    # `echo 1 2 3 | streamsonic --output events` 159 -> 137 MB (bench/startup.py)
    if first:
        released += release_llvm_pages()
        _llvm_given_back = True
        log.debug("gave back %d KiB of numba's LLVM library pages", released)
    log.info("pitch model %s on %s (%d classes, MIDI %d..%d)", ckpt.path, device,
             len(ckpt.classes), min(ckpt.classes), max(ckpt.classes))
    if ckpt.weights_sha256 is None:
        log.info("%s has no weights checksum (saved before checksums): damage to it cannot be "
                 "detected; re-save it with this version", path)
    return stepper, PitchEncoding(ckpt.classes), ckpt
