"""The agent's runtime: configuration, device polling, the data path, twin state, control and
schedules."""
