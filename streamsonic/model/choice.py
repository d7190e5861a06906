"""Choosing a note: the model's distribution, weighted by the data (influence).

For each candidate pitch ``p`` (the scale's pitches inside the configured range) the score is

    score(p) = (1 - influence) * log P_model(p)  +  influence * -(p - d)^2 / (2 * width^2)

where ``d`` is the data's pitch (the normalized value scaled into the range) and ``width``
is ``kernel_width`` in semitones. ``influence = 1`` plays the candidate nearest to the data
(the data, quantized to the scale); ``influence = 0`` plays what the model finds most likely
(the data then reaches the music only as the network's input); values between let the model
move a note away from the data when it is confident enough. ``temperature = 0`` takes the
best score; above 0 it samples from ``softmax(score / temperature)`` with a seeded generator.

That is the research's choice (one note per sample, the logits read with the data as the
network's input). Phrases (``model.passing_notes`` > 0, the default) choose differently,
with the logits of the model's next note after the notes played (:meth:`Chooser.choose_near`
for the data's note, :meth:`Chooser.choose_among` for the notes the model adds): the data's
note is the best-scoring candidate within :meth:`Chooser.window` semitones of the data's
pitch (10 * (1 - influence): 2 at the default 0.8, 5 at 0.5, 10 at 0, only the nearest at
1), never the note just played while another is in reach.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np

from streamsonic.encoding import PitchEncoding


class Chooser:
    """Turns logits over the model's classes into one candidate pitch per row."""

    def __init__(
        self,
        encoding: PitchEncoding,
        candidates: np.ndarray,
        influence: float,
        temperature: float = 0.0,
        kernel_width: float = 1.5,
    ) -> None:
        if candidates.size == 0:
            raise ValueError("no candidate pitches")
        self.encoding = encoding
        self.candidates = np.asarray(candidates, dtype=np.int64)
        self.low = int(self.candidates[0])
        self.high = int(self.candidates[-1])
        self.influence = float(influence)
        self.temperature = float(temperature)
        self._cand_f = self.candidates.astype(np.float64)
        self._classes_f = encoding.classes.astype(np.float64)
        self._cand_class = encoding.nearest_class_for(self.candidates)
        self._cand_inputs = np.asarray(encoding.input_for_pitch(self._cand_f), dtype=np.float64)
        self._kernel_scale = 1.0 / (2.0 * kernel_width * kernel_width)
        # One row's arguments and results (:meth:`encode_one`, :meth:`choose_one`)
        self._one_norm = np.empty(1, dtype=np.float64)
        self._one_pitch = np.empty(1, dtype=np.float64)
        self._one_input = np.empty(1, dtype=np.float64)
        self._one_uniform = np.zeros(1, dtype=np.float64)
        self._one_out = np.empty(1, dtype=np.int64)
        self._k: ModuleType | None = None  # streamsonic.model.kernels, once imported

    @property
    def cand_class(self) -> np.ndarray:
        """Each candidate's model class."""
        return self._cand_class

    @property
    def cand_pitch(self) -> np.ndarray:
        """Each candidate's pitch, as float64."""
        return self._cand_f

    @property
    def cand_inputs(self) -> np.ndarray:
        """Each candidate's network input (float64)."""
        return self._cand_inputs

    @property
    def kernel_scale(self) -> float:
        """The data kernel's ``1 / (2 * width^2)``."""
        return self._kernel_scale

    def _kernels(self) -> ModuleType:
        """The compiled kernels (numba), imported on first use."""
        if self._k is None:
            from streamsonic.model import kernels  # noqa: PLC0415 - numba, on first use

            self._k = kernels
        return self._k

    def data_pitch(self, normalized: np.ndarray) -> np.ndarray:
        """Normalized values (0..1) -> fractional pitches in the configured range."""
        return self.low + np.asarray(normalized, dtype=np.float64) * (self.high - self.low)

    def data_input(self, data_pitch: np.ndarray) -> np.ndarray:
        """The network input that encodes each data pitch."""
        return np.asarray(self.encoding.input_for_pitch(data_pitch), dtype=np.float64)

    def encode(self, normalized: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`data_pitch` and :meth:`data_input` of ``normalized`` in one compiled call."""
        from streamsonic.model import kernels  # noqa: PLC0415 - numba, loaded on first use

        values = np.asarray(normalized, dtype=np.float64)
        pitch = np.empty(values.shape[0], dtype=np.float64)
        inputs = np.empty(values.shape[0], dtype=np.float64)
        kernels.encode(values, float(self.low), float(self.high - self.low), self._classes_f,
                       pitch, inputs)
        return pitch, inputs

    def encode_one(self, normalized: float) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`encode` of one value (the same compiled call), into the chooser's own
        arrays (shape (1,)): valid until its next call."""
        self._one_norm[0] = normalized
        self._kernels().encode(self._one_norm, float(self.low), float(self.high - self.low),
                       self._classes_f, self._one_pitch, self._one_input)
        return self._one_pitch, self._one_input

    def choose_one(self, logits: np.ndarray, data_pitch: np.ndarray,
                   rng: np.random.Generator) -> int:
        """:meth:`choose` of one row (the same compiled call): the candidate's index."""
        uniform = self._one_uniform
        if self.temperature > 0.0:
            uniform[0] = rng.random()
        self._kernels().choose(np.asarray(logits, dtype=np.float64), self._cand_class, self._cand_f,
                       data_pitch, self.influence, self._kernel_scale, self.temperature,
                       uniform, self._one_out)
        return int(self._one_out[0])

    def candidate_input(self, index: np.ndarray) -> np.ndarray:
        """The network input that encodes each chosen candidate."""
        return self._cand_inputs[index]

    def scores(self, logits: np.ndarray, data_pitch: np.ndarray) -> np.ndarray:
        """Scores (batch, n_candidates) for logits (batch, n_classes), in NumPy: the
        reference that the compiled :meth:`choose` is tested against."""
        logits = np.asarray(logits, dtype=np.float64)
        sub = logits[:, self._cand_class]
        sub = sub - sub.max(axis=1, keepdims=True)
        log_p = sub - np.log(np.exp(sub).sum(axis=1, keepdims=True))
        dist = self._cand_f[None, :] - np.asarray(data_pitch, dtype=np.float64)[:, None]
        kernel = -(dist * dist) * self._kernel_scale
        return (1.0 - self.influence) * log_p + self.influence * kernel

    def choose(
        self, logits: np.ndarray, data_pitch: np.ndarray, rngs: list[np.random.Generator]
    ) -> np.ndarray:
        """Index into ``candidates`` for each row (one generator per row).

        Computes :meth:`scores` and its argmax (or a sample) in one compiled call.
        """
        from streamsonic.model import kernels  # noqa: PLC0415 - numba, loaded on first use

        batch = logits.shape[0]
        out = np.empty(batch, dtype=np.int64)
        if self.temperature > 0.0:
            uniform = np.array([rng.random() for rng in rngs], dtype=np.float64)
        else:
            uniform = np.zeros(batch, dtype=np.float64)
        kernels.choose(np.asarray(logits, dtype=np.float64), self._cand_class, self._cand_f,
                       np.asarray(data_pitch, dtype=np.float64), self.influence,
                       self._kernel_scale, self.temperature, uniform, out)
        return out

    # -- phrases -------------------------------------------------------------------------------
    @property
    def window(self) -> float:
        """Semitones from the data's pitch within which a phrase's data note may move."""
        return 10.0 * (1.0 - self.influence)

    def nearest(self, data_pitch: np.ndarray) -> np.ndarray:
        """Index of the candidate nearest to each data pitch (what influence 1 plays)."""
        dist = np.abs(self._cand_f[None, :] - np.asarray(data_pitch, np.float64)[:, None])
        return np.asarray(dist.argmin(axis=1), dtype=np.int64)

    def log_p(self, logits: np.ndarray) -> np.ndarray:
        """The model's log-probability of each candidate (batch, n_candidates), the
        softmax taken over the candidates, each row as of that row alone (one compiled
        call: :func:`~streamsonic.model.kernels.log_p`; the search compares its paths'
        log-probabilities as single rows, and NumPy would sum a batch's rows in another
        order than a row alone)."""
        rows = np.asarray(logits, dtype=np.float64)
        out = np.empty((rows.shape[0], self._cand_class.shape[0]), dtype=np.float64)
        self._kernels().log_p(rows, self._cand_class, out)
        return out

    def _pick(self, scores: np.ndarray, rng: np.random.Generator) -> int:
        """The best of ``scores`` (-inf: not allowed), or a sample at the temperature."""
        if self.temperature <= 0.0:
            return int(np.argmax(scores))
        z = scores / self.temperature
        p = np.exp(z - z.max())
        cum = np.cumsum(p / p.sum())
        return min(int(np.searchsorted(cum, rng.random(), side="right")), len(cum) - 1)

    def choose_near(self, logits: np.ndarray | None, data_pitch: np.ndarray,
                    avoid: np.ndarray, rngs: list[np.random.Generator]) -> np.ndarray:
        """A phrase's data note for each row: among the candidates within :attr:`window`
        semitones of the data's pitch (always the nearest), the best of ``(1 - influence)
        * log P_model + influence * kernel``; ``avoid`` (the note just played, -1: none) only
        when nothing else is in reach. ``logits`` None (a stream's first note): the nearest.
        """
        data = np.asarray(data_pitch, dtype=np.float64)
        if logits is not None and self.influence < 1.0 and self.temperature <= 0.0:
            from streamsonic.model import kernels  # noqa: PLC0415 - numba, on first use

            out = np.empty(len(data), dtype=np.int64)  # the same as below, compiled
            kernels.choose_near(self.log_p(logits), self._cand_f, data,
                                np.asarray(avoid, dtype=np.int64), self.window, self.influence,
                                self._kernel_scale, out)
            return out
        nearest = self.nearest(data)
        if logits is None or self.influence >= 1.0:
            return nearest
        dist = self._cand_f[None, :] - data[:, None]
        kernel = -(dist * dist) * self._kernel_scale
        scores = (1.0 - self.influence) * self.log_p(logits) + self.influence * kernel
        out = np.empty(len(data), dtype=np.int64)
        for i in range(len(data)):
            reach = np.abs(dist[i]) <= self.window
            reach[nearest[i]] = True
            if avoid[i] >= 0 and reach.sum() > 1:
                reach[avoid[i]] = False
            out[i] = self._pick(np.where(reach, scores[i], -np.inf), rngs[i])
        return out

    def choose_among(self, logits: np.ndarray, allowed: list[np.ndarray],
                     rngs: list[np.random.Generator],
                     bonus: list[np.ndarray] | None = None) -> np.ndarray:
        """A note the model adds, for each row: the candidate of ``allowed[i]`` (indices)
        that the model finds most likely, ``bonus[i]`` (nats, one per allowed candidate)
        added (or a sample at the temperature)."""
        log_p = self.log_p(logits)
        out = np.empty(len(allowed), dtype=np.int64)
        for i, options in enumerate(allowed):
            scores = np.full(log_p.shape[1], -np.inf)
            scores[options] = log_p[i, options] + (0.0 if bonus is None else bonus[i])
            out[i] = self._pick(scores, rngs[i])
        return out
