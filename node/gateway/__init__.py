"""The gateway daemon: config, control socket, event loop."""
