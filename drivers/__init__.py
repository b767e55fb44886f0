"""Southbound protocol drivers, one module (or folder) per protocol; the contract is in
``drivers.base``. A driver stands on ``edgetwin.core`` (readings, quality, point addresses,
errors) and never imports the agent, a twin or a rule; it is registered as an entry point in
``edgetwin.drivers``, and a protocol library only it needs is an extra of the distribution."""
