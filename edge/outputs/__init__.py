"""Event outputs: MQTT (mqtt.py), webhooks (webhook.py), commands (exec.py), JSON lines.

Each runs off the inference loop's thread: `submit` only hands an event over. MQTT and
webhooks deliver at least once and in order through a bounded on-disk queue (queue.py,
worker.py) that survives a broker outage, a restart and Ctrl-C.
"""
