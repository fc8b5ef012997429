"""Sensors: power, energy, temperature, clocks and memory, each saying whether it is available and why not.

`base.py` is the protocol; one module per platform; `registry.py` builds the set for a host; `sampler.py`
samples them in a background thread; `energy.py` turns samples into energy per phase.
"""
