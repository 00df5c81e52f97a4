"""Outputs: alerts (JSON lines and a human log), flows as Argus binetflow, the replay recorder."""
