"""QUIC transport (aioquic): `aegis push --quic` and the gateway mesh."""
