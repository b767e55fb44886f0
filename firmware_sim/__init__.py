"""Simulated field devices built on pymodbus' server, for the demo, the tests and benchmarks.

Each simulator is runnable standalone (``python -m edgetwin.firmware_sim meter --port N``) and
in-process (``async with MeterSimulator(port=N): ...``). Simulators take an injectable time
source so tests can drive their physics deterministically.
"""
