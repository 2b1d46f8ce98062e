"""Stopping the child processes host_sim starts (boards, proxy hosts,
Mosquitto): by their own Popen, never by name."""
import subprocess


def terminate(proc, grace=10.0):
    """SIGTERM proc if it still runs, SIGKILL after `grace` seconds; reaped."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
