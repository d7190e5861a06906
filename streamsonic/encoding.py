"""The explicit encoding of notes for the networks, shared by training and inference.

A pitch model knows a fixed, sorted table of MIDI pitches (its classes, stored in the
checkpoint). Its scalar input is a position in that table scaled to 0..1: class ``k`` of
``n`` is ``k / (n - 1)``. A data value, once scaled into the pitch range, is encoded the same
way (by interpolating between classes), which is what lets data "influence" the model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class PitchEncoding:
    """Maps MIDI pitches <-> class indices <-> the network's scalar input."""

    def __init__(self, classes: Sequence[int]) -> None:
        table = np.asarray(sorted({int(c) for c in classes}), dtype=np.int64)
        if table.size < 2:
            raise ValueError("a pitch encoding needs at least two classes")
        if table[0] < 0 or table[-1] > 127:
            raise ValueError("pitch classes must be MIDI pitches 0..127")
        self.classes = table
        self._positions = np.arange(table.size, dtype=np.float64)
        self._index = {int(p): i for i, p in enumerate(table)}

    @property
    def size(self) -> int:
        """Number of classes."""
        return int(self.classes.size)

    @property
    def low(self) -> int:
        """Lowest pitch the model knows."""
        return int(self.classes[0])

    @property
    def high(self) -> int:
        """Highest pitch the model knows."""
        return int(self.classes[-1])

    def index(self, pitch: int) -> int:
        """Class index of ``pitch``; a pitch that is not a class maps to the nearest one."""
        found = self._index.get(int(pitch))
        if found is not None:
            return found
        return int(np.argmin(np.abs(self.classes - pitch)))

    def input_for_index(self, index: int | np.ndarray) -> float | np.ndarray:
        """The network input for class ``index`` (0..1)."""
        return np.asarray(index, dtype=np.float64) / (self.size - 1)

    def input_for_pitch(self, pitch: float | np.ndarray) -> float | np.ndarray:
        """The network input for a (possibly fractional) pitch, clamped to the table."""
        return np.interp(pitch, self.classes, self._positions) / (self.size - 1)

    def nearest_class_for(self, pitches: np.ndarray) -> np.ndarray:
        """For each pitch, the class whose logit stands for it.

        A pitch the model knows maps to itself; one it does not (an output range wider than
        the training data) maps to the nearest class of the same pitch class (octave
        equivalence), else to the nearest class.
        """
        out = np.empty(len(pitches), dtype=np.int64)
        for i, p in enumerate(pitches):
            if int(p) in self._index:
                out[i] = self._index[int(p)]
                continue
            same = np.flatnonzero(self.classes % 12 == int(p) % 12)
            pool = same if same.size else np.arange(self.size)
            out[i] = pool[np.argmin(np.abs(self.classes[pool] - p))]
        return out
