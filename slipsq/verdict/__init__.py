"""Verdicts: what a decision does. Replay records it; inline drops packets and blocks in the kernel."""
