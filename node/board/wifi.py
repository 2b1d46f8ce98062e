# Wi-Fi on a real board (docs/BOARDS.md "What runs on the board"): join
# the configured network once at boot, waiting up to 30 s, and set the
# clock by NTP for envelope timestamps.  The runtime's ticker rejoins while
# it is lost.  Imported only where there is Wi-Fi to join (not the Unix port).
import time

from node.board.runtime import log


def wifi_up(cfg):
    import network
    w = cfg.get("wifi") or {}
    sta = network.WLAN(network.STA_IF)
    sta.active(True)
    if not sta.isconnected():
        log("joining Wi-Fi", w.get("ssid"))
        sta.connect(w.get("ssid"), w.get("password", ""))
        t0 = time.ticks_ms()
        while not sta.isconnected() and time.ticks_diff(time.ticks_ms(), t0) < 30000:
            time.sleep_ms(200)
    log("Wi-Fi", "up %s" % (sta.ifconfig()[0],) if sta.isconnected() else "not up yet")
    if sta.isconnected():
        try:                        # envelope timestamps want a real clock
            import ntptime
            ntptime.settime()
        except Exception as e:      # no NTP: timestamps count from the board's epoch
            log("no NTP time:", repr(e))
    return sta
