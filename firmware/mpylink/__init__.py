"""mpylink: links ELF relocatable objects into a MicroPython .mpy v6 native module."""
