"""Topic filters and the rule that turns a topic into a stream (voice) name.

``mqtt.stream_name`` is a ``str.format`` template with one field, ``topic``: ``{topic}`` is
the whole topic, ``{topic[1]}`` its second level (0-based), ``{topic[-1]}`` its last.
So ``"{topic[1]}"`` names ``plant/7/temperature`` ``7`` (and groups every quantity of a
plant into one voice), and ``"{topic[1]}-{topic[-1]}"`` names it ``7-temperature``.
"""

from __future__ import annotations

import re
import string
from typing import Any, ClassVar

from streamsonic.errors import ConfigError

SHARE_PREFIX = "$share/"


class Topic(str):
    """A topic string whose items are its levels (negative indexes count from the end)."""

    __slots__ = ()
    #: What separates the levels.
    SEPARATOR: ClassVar[str] = "/"

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):  # str.format passes "-1" as a string
            try:
                key = int(key)
            except ValueError:
                raise KeyError(key) from None
        if isinstance(key, int):
            return self.split(self.SEPARATOR)[key]
        return str.__getitem__(self, key)


class Subject(Topic):
    """A NATS subject whose items are its dot-separated tokens."""

    __slots__ = ()
    SEPARATOR: ClassVar[str] = "."


def template_problem(template: str, field: str = "topic") -> str | None:
    """What is wrong with the stream-name ``template`` (None: nothing): it may hold only
    ``{field}`` and ``{field[N]}`` (``topic`` for MQTT, ``subject`` for NATS), without
    attributes, conversions or format specs (``{topic.__class__}`` named streams after
    Python internals, ``{topic.nosuch}`` failed every message, ``{topic:d}`` skipped every
    one: a QA pass at 36e50ff), and must hold at least one."""
    example = f'"{{{field}}}" or "{{{field}[1]}}"'
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        return f"is not a valid template ({err}); write e.g. {example}"
    used = 0
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        used += 1
        if not re.fullmatch(rf"{field}(\[-?[0-9]+\])?", name) or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "") + \
                (f":{spec}" if spec else "") + "}"
            return (f"uses {shown}; only {{{field}}} and {{{field}[N]}} (the N-th level, "
                    "0-based; -1 is the last) are known, without attributes, conversions "
                    "or formats")
    if not used:
        return (f"does not use {{{field}}}: every {field} would be one stream; write e.g. "
                f"{example}")
    return None


def check_template(template: str, key: str = "mqtt.stream_name", field: str = "topic") -> None:
    """Raise ConfigError unless ``template`` (config key ``key``) is a stream-name template
    of ``field`` (:func:`template_problem`)."""
    problem = template_problem(template, field)
    if problem is not None:
        raise ConfigError(f"{key} = {template!r} {problem}")


def stream_name(template: str, topic: str, levels: type[Topic] = Topic) -> str:
    """The stream name of ``topic``; raises LookupError if the topic has too few levels.

    ``levels`` is :class:`Topic` (MQTT: ``{topic}``, levels split at ``/``) or
    :class:`Subject` (NATS: ``{subject}``, tokens split at ``.``)."""
    field = "subject" if issubclass(levels, Subject) else "topic"
    if template == f"{{{field}}}":
        return topic
    return template.format(**{field: levels(topic)})


def check_filter(topic_filter: str) -> None:
    """Raise ConfigError unless ``topic_filter`` is a valid MQTT subscription filter."""
    text = topic_filter
    if text.startswith(SHARE_PREFIX):
        group, sep, text = text[len(SHARE_PREFIX):].partition("/")
        if not group or not sep or any(c in group for c in "+#"):
            raise ConfigError(
                f"topic filter {topic_filter!r}: write shared subscriptions as "
                "$share/GROUP/FILTER (GROUP without + or #)"
            )
    if not text:
        raise ConfigError(f"topic filter {topic_filter!r} is empty; e.g. --topic 'sensors/#'")
    levels = text.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ConfigError(
                f"topic filter {topic_filter!r}: '#' must be a whole level and the last one"
            )
        if "+" in level and level != "+":
            raise ConfigError(f"topic filter {topic_filter!r}: '+' must be a whole level")
    if len(topic_filter.encode()) > 65535 or "\0" in topic_filter:
        raise ConfigError(f"topic filter {topic_filter!r} is too long or contains NUL")


def publish_topic(prefix: str, stream: str) -> str:
    """``PREFIX/<stream>`` with wildcard characters in the stream name made safe."""
    safe = stream.replace("+", "_").replace("#", "_").replace("\0", "_") or "_"
    base = prefix.rstrip("/")
    return f"{base}/{safe}" if base else safe
