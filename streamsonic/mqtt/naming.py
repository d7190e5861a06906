"""Topic filters and the rule that turns a topic into a stream (voice) name.

``mqtt.stream_name`` is a ``str.format`` template with one field, ``topic``: ``{topic}`` is
the whole topic, ``{topic[1]}`` its second level (0-based), ``{topic[-1]}`` its last.
So ``"{topic[1]}"`` names ``plant/7/temperature`` ``7`` (and groups every quantity of a
plant into one voice), and ``"{topic[1]}-{topic[-1]}"`` names it ``7-temperature``.
"""

from __future__ import annotations

import string
from typing import Any

from streamsonic.errors import ConfigError

SHARE_PREFIX = "$share/"


class Topic(str):
    """A topic string whose items are its levels (negative indexes count from the end)."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):  # str.format passes "-1" as a string
            try:
                key = int(key)
            except ValueError:
                raise KeyError(key) from None
        if isinstance(key, int):
            return self.split("/")[key]
        return str.__getitem__(self, key)


def check_template(template: str) -> None:
    """Raise ConfigError unless ``template`` only uses the ``topic`` field."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise ConfigError(
            f"mqtt.stream_name = {template!r} is not a valid template ({err}); "
            'write e.g. "{topic}" or "{topic[1]}"'
        ) from None
    for name in fields:
        if name.partition("[")[0].partition(".")[0] != "topic":
            raise ConfigError(
                f"mqtt.stream_name = {template!r} uses {{{name}}}; only {{topic}} and "
                "{topic[N]} (the N-th level, 0-based; -1 is the last) are known"
            )
    if not fields:
        raise ConfigError(
            f"mqtt.stream_name = {template!r} does not use {{topic}}: every topic would be "
            'one stream; write e.g. "{topic}" or "{topic[1]}"'
        )


def stream_name(template: str, topic: str) -> str:
    """The stream name of ``topic``; raises LookupError if the topic has too few levels."""
    if template == "{topic}":
        return topic
    return template.format(topic=Topic(topic))


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
