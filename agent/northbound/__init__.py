"""The northbound path: the durable SQLite outbox (store-and-forward) and the signing MQTT
publisher."""
