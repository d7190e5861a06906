"""Under overload, the model's passing notes go first.

A cue with passing notes (``model.passing_notes``) costs several times what a data note alone
does (the search steps the model through every note it adds). When the event loop cannot
make every cue's notes in time, the engine plays some cues without them: their data notes
are the same kind of note (chosen near the data's pitch, the stream's phrase state stepped
through them), only the notes leading to them are left out. Data notes and accents are never
shed.

In time means: a cue's notes are made within ``clock.batch_window`` + :data:`SHED_AFTER`
seconds of the moment it came to be played, counted from when the sample reached the
daemon where the source knows it (an MQTT or NATS source: when its network side handed
the message over; a worker: when the router read it, or its source's hand-over), so a wait
in a queue or a pipe counts too; a sample that came while its stream was held back by
``clock.max_rate`` counts from when the stream could play again, and a waiting sample's
(or a tick's) from when it was due. :class:`Shedding` keeps the passing notes of as
many of a batched step's cues as fit before its oldest cue's deadline, at what recent
steps with passing notes cost per cue; the others play without. Waits and costs are
measured on the loop's clock: a loop that keeps up sheds nothing, and on virtual time
(``replay --fast``, the tests' virtual clock) nothing waits and nothing costs time, so
nothing is shed.
"""

from __future__ import annotations

import logging

from streamsonic.stats import RateLimitedLog

log = logging.getLogger("streamsonic.engine")

#: Seconds beyond ``clock.batch_window`` within which a cue's notes should be made (the
#: engine's share of a 50 ms sample-to-note budget; tick clock: after its tick was due).
SHED_AFTER = 0.015
#: Weight of the newest step in the cost estimates (an exponential moving average).
LEARN = 0.2
#: A step is taken as at most this many times the current estimate (a pause of the whole
#: process, such as a garbage collection, is not what its cues cost).
OUTLIER = 4.0


def _average(old: float | None, new: float) -> float:
    if old is None:
        return new
    return old + LEARN * (min(new, OUTLIER * old) - old)


class Shedding:
    """The cost of cues with and without passing notes, and what was shed."""

    def __init__(self, warn_interval: float) -> None:
        self.phrase: float | None = None  # seconds per cue with passing notes (measured)
        self.shed = 0  # cues played without their passing notes
        self._warn = RateLimitedLog(log, warn_interval)

    def keep(self, cues: int, budget: float) -> int:
        """How many of ``cues`` may play their passing notes when the step must be done in
        ``budget`` seconds: none when it is already late; at least one while it is not (so
        that their cost keeps being measured); all of them until that was measured once."""
        if budget <= 0.0:
            return 0
        if self.phrase is None or cues * self.phrase <= budget:
            return cues
        return max(1, int(budget / self.phrase))

    def measured(self, cues: int, seconds: float) -> None:
        """A step of ``cues`` cues with passing notes took ``seconds``."""
        if cues > 0:
            self.phrase = _average(self.phrase, seconds / cues)

    def count(self, cues: int, waited: float) -> None:
        """``cues`` cues play without their passing notes, the oldest of them ``waited``
        seconds after it came: count them, and say so (at most once every
        ``daemon.warn_interval`` seconds)."""
        self.shed += cues
        self._warn.warning(
            "shed.phrases", "the loop cannot make every passing note in time (a step's "
            "oldest cue came %.0f ms before it): %d cues played without the model's passing "
            "notes so far (shed.phrases; --set model.passing_notes=0 plays one note per "
            "sample throughout)", waited * 1000, self.shed)
