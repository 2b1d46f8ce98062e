"""MQTT drivers: paho on gateways and operator tools, the protocol itself
lives in node/core (envelope, outbox, transfer, fleet)."""
