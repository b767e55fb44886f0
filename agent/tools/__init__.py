"""The command line (``edgetwin``) and its tools: demo, discovery, commissioning, local brokers."""
