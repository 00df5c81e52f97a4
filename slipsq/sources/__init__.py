"""Sources: where packets and flows come from (NFQUEUE live, pcap replay, flow files), and the clock.

A source reads and hands packets to the engine's flow table (or flows to `Engine.flow`) with their
time: packet time in replay, wall time live. Sources never decide anything about the traffic.
"""
