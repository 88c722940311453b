"""The topology benchmark behind ``gradchain bench`` and ``benchmarks/topology.py``.

It runs real jobs over a real MQTT broker for a grid of provider counts,
gradient sizes and topologies, and reports round latency, the critical
path's stages, broker bytes, CPU and memory, and a fitted cost model. See
docs/benchmarks.md.
"""
