"""Proxy execution of MicroPython boards' modules on a gateway."""
