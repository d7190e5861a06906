"""Scales, keys, velocity and voice allocation."""

from __future__ import annotations

import logging
import math

import pytest

from streamsonic.config import DEFAULT_PALETTE, VoiceRule
from streamsonic.music import (
    PERCUSSION_CHANNEL,
    SCALES,
    VoiceAllocator,
    beyond_pitch,
    in_scale,
    pan_for,
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


def test_velocity_grows_with_anomaly_up_to_the_threshold() -> None:
    assert velocity_for(0.0, 50, 100, 0.5) == 50
    assert velocity_for(0.25, 50, 100, 0.5) == 75
    assert velocity_for(0.5, 50, 100, 0.5) == 100
    assert velocity_for(1.0, 50, 100, 0.5) == 100
    assert velocity_for(math.nan, 50, 100, 0.5) == 50


def test_beyond_pitch_orders_magnitudes_on_a_log_scale() -> None:
    just_over = beyond_pitch(1.1, 50, 89, 12)
    ten = beyond_pitch(1.0 + 10, 50, 89, 12)
    far = beyond_pitch(1.0 + 1e6, 50, 89, 12)
    assert 89 < just_over < 90 < ten < far == 89 + 12
    assert ten - just_over >= 3  # 10 widths out is clearly higher than 0.1 out
    assert beyond_pitch(-0.1, 50, 89, 12) == pytest.approx(50 - (just_over - 89))
    assert beyond_pitch(-1e9, 50, 89, 12) == 50 - 12


def test_palette_and_pan_make_streams_distinct() -> None:
    alloc = VoiceAllocator(default_program=-1, palette=DEFAULT_PALETTE, pan_spread=0.8)
    voices = [alloc.voice(f"s{i}") for i in range(8)]
    assert len({v.program for v in voices}) == 8
    assert len({v.pan for v in voices}) == 8
    assert voices[0].pan == 64  # the first stream plays in the centre
    assert all(13 <= v.pan <= 114 for v in voices)  # within +-0.8 of the field
    assert [v.program for v in voices] == list(DEFAULT_PALETTE[:8])
    # a rule still overrides the palette
    ruled = VoiceAllocator(rules=(VoiceRule(match="cpu", program=40),), default_program=-1,
                           palette=DEFAULT_PALETTE)
    assert ruled.voice("cpu").program == 40


def test_pan_sequence_spreads_neighbours() -> None:
    pans = [pan_for(i, 1.0) for i in range(4)]
    assert pans == [64, 32, 96, 17]


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


def test_a_rules_program_that_its_channel_cannot_play_is_said(
        caplog: pytest.LogCaptureFixture) -> None:
    """A channel plays one program: a rule that gives another one on a channel a stream
    already plays played the first stream's program without a word (a QA pass,
    2026-12-06). It still does (the first stream keeps its sound), and a warning says so."""
    alloc = VoiceAllocator(rules=(VoiceRule(match="s03", channel=1, program=5),),
                           default_program=0)
    first = alloc.voice("s00")
    assert first.channel == 0
    with caplog.at_level(logging.WARNING):
        third = alloc.voice("s03")
    assert (third.channel, third.program) == (0, 0)
    assert "gives program 5 on channel 1, but that channel already plays program 0" \
        in caplog.text
    alloc.rules = (VoiceRule(match="s0*", channel=1, program=5),)
    with caplog.at_level(logging.WARNING):
        caplog.clear()
        for i in range(4, 9):
            alloc.voice(f"s0{i}")
    assert caplog.text.count("already plays program") == 1  # once a rule, not a stream
