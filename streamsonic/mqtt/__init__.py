"""MQTT helpers shared by the MQTT source and the ``mqtt:`` output.

``connection``: broker URL, credentials, TLS, building a paho client, one-line errors.
``naming``: topic-filter checks and the topic -> stream-name rule.
``payload``: message payloads -> samples or notes.
"""
