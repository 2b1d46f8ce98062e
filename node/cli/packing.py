"""What `aegis pack` does to a module before signing it."""
from node.core import memcap, metering


def prepare_wasm(wasm, memory_pages):
    """Cap the module's memory at `memory_pages` (memory.grow past it then
    returns -1) and meter it (docs/METERING.md).  Raises ValueError
    (MeteringError) for wasm the pass cannot meter."""
    return metering.instrument(memcap.cap_memory(wasm, memory_pages))
