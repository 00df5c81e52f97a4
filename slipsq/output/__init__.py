"""Outputs: alerts (JSON lines and a human log) and flows as Argus binetflow. (The replay recorder,
which records blocks instead of making them, is in slipsq.verdict.replay.)"""
