"""Operations: HTTP health and metrics, systemd notification, the container supervisor and the
status page."""
