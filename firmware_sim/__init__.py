"""Simulated field devices built on pymodbus' and asyncua's servers, for the demo, the tests and
benchmarks.

Each simulator is runnable standalone (``python -m edgetwin.firmware_sim meter --port N``) and
in-process (``async with MeterSimulator(port=N): ...``). Simulators take an injectable time
source so tests can drive their physics deterministically. They encode registers with pymodbus
and pysunspec2 (``registers``, ``sunspec_inverter``), never with the drivers' own codecs, and
import nothing of the project but ``edgetwin.core``; only the demo imports them.
"""
