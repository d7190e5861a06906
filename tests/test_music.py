"""Scales, keys, velocity and voice allocation."""

from __future__ import annotations

import logging
import math

import pytest

from streamsonic.config import VoiceRule
from streamsonic.music import (
    PERCUSSION_CHANNEL,
    SCALES,
    VoiceAllocator,
    in_scale,
    parse_key,
    scale_pitches,
    velocity_for,
)


@pytest.mark.parametrize(("name", "pc"), [("C", 0), ("F#", 6), ("Bb", 10), ("c#", 1), ("Cb", 11),
                                          ("E#", 5), ("A♭", 8)])
def test_parse_key(name: str, pc: int) -> None:
    assert parse_key(name) == pc


@pytest.mark.parametrize("bad", ["", "H", "C#x", "7"])
def test_parse_key_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="not a key"):
        parse_key(bad)


@pytest.mark.parametrize("scale", sorted(SCALES))
@pytest.mark.parametrize("key", ["C", "F#", "Bb"])
def test_scale_pitches_are_in_scale_and_complete(scale: str, key: str) -> None:
    pitches = scale_pitches(scale, key, 50, 89)
    assert all(in_scale(int(p), scale, key) for p in pitches)
    assert all(50 <= p <= 89 for p in pitches)
    expected = [p for p in range(50, 90) if (p - parse_key(key)) % 12 in SCALES[scale]]
    assert list(pitches) == expected


def test_required_scales_exist() -> None:
    for name in ("chromatic", "major", "minor", "pentatonic", "minor-pentatonic", "blues",
                 "dorian"):
        assert name in SCALES
    assert list(scale_pitches("major", "C", 60, 72)) == [60, 62, 64, 65, 67, 69, 71, 72]
    assert list(scale_pitches("blues", "A", 57, 69)) == [57, 60, 62, 63, 64, 67, 69]


def test_velocity_grows_with_deviation() -> None:
    assert velocity_for(0.0, 50, 120, 3.0) == 50
    assert velocity_for(1.5, 50, 120, 3.0) == 85
    assert velocity_for(-3.0, 50, 120, 3.0) == 120
    assert velocity_for(math.inf, 50, 120, 3.0) == 120
    assert velocity_for(math.nan, 50, 120, 3.0) == 50


def test_voices_skip_percussion_and_follow_rules() -> None:
    alloc = VoiceAllocator(rules=(VoiceRule(match="cpu*", program=40),
                                  VoiceRule(match="drums", channel=10, program=0),
                                  VoiceRule(match="quiet", mute=True)), default_program=5)
    assert alloc.voice("cpu.user").program == 40
    assert alloc.voice("mem").program == 5
    assert alloc.voice("drums").channel == PERCUSSION_CHANNEL
    assert alloc.voice("quiet").muted
    channels = [alloc.voice(f"s{i}").channel for i in range(12)]
    assert PERCUSSION_CHANNEL not in channels
    assert alloc.voice("cpu.user") is alloc.voice("cpu.user")


@pytest.mark.parametrize("overflow", ["share", "drop"])
def test_more_streams_than_channels_never_crashes(overflow: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    alloc = VoiceAllocator(overflow=overflow)
    with caplog.at_level(logging.WARNING):
        voices = [alloc.voice(f"stream{i}") for i in range(40)]
    assert len({v.channel for v in voices}) == 15
    assert sum("more streams than" in r.message for r in caplog.records) == 1
    extra = voices[15:]
    assert all(v.muted for v in extra) == (overflow == "drop")
    # Sharing spreads the load evenly over the 15 melodic channels.
    if overflow == "share":
        loads = [sum(v.channel == c for v in voices) for c in range(16) if c != 9]
        assert max(loads) - min(loads) <= 1
