"""Southbound protocol drivers. The contract is in ``drivers.base``; each driver is one module."""
