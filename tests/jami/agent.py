#!/usr/bin/python3
"""D-Bus bridge between the Rust conformance tests (tests/tests/jami.rs) and a headless jamid.

The test starts this script (with /usr/bin/python3, inside the test's network namespace) and
talks to it with one JSON object per line on stdin/stdout. Every request carries an "id"; every
answer echoes it with either "ok" (a result) or "err" (a one-line error). Requests:

  {"op": "call", "method": M, "args": [...]}         ConfigurationManager.M(*args)
        a dict argument is sent as a{ss}; {"bytes": "<hex>"} as ay.
  {"op": "wait_signal", "signal": S, "match": {"0": v, ...}, "since": N, "timeout": T}
        the first recorded signal S (seq > N) whose positional arguments equal the given
        values; answers {"seq": n, "args": [...], "t": seconds since start} or err "timeout".
  {"op": "wait_details", "account": A, "volatile": bool, "key": K, "value": V, "timeout": T}
        polls get(Volatile)AccountDetails(A) every 100 ms until K == V; answers the details.
  {"op": "signals", "since": N}                      every recorded signal after seq N.
  {"op": "http_get", "url": U, "timeout": T}         a GET from inside the namespace (metrics).
  {"op": "quit"}

Signals of cx.ring.Ring.ConfigurationManager are recorded from the moment the bus is joined.
Nothing here decides whether a test passes: the Rust side asserts.
"""

import json
import os
import sys
import time
import urllib.request

import dbus
import dbus.mainloop.glib
from gi.repository import GLib

IFACE = "cx.ring.Ring.ConfigurationManager"
PATH = "/cx/ring/Ring/ConfigurationManager"
SERVICE = "cx.ring.Ring"
XML = "/usr/share/dbus-1/interfaces/cx.ring.Ring.ConfigurationManager.xml"

START = time.monotonic()


def plain(v):
    """dbus types -> JSON-able Python values."""
    if isinstance(v, (dbus.Array, list)) and getattr(v, "signature", None) == "y":
        return {"bytes": bytes(v).hex()}
    if isinstance(v, dbus.ByteArray):
        return {"bytes": bytes(v).hex()}
    if isinstance(v, (dbus.Dictionary, dict)):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (dbus.Array, dbus.Struct, list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dbus.Boolean):
        return bool(v)
    if isinstance(v, (dbus.Byte, dbus.Int16, dbus.Int32, dbus.Int64, dbus.UInt16,
                      dbus.UInt32, dbus.UInt64)):
        return int(v)
    if isinstance(v, (dbus.String, dbus.ObjectPath, dbus.Signature, str)):
        return str(v)
    if isinstance(v, dbus.Double):
        return float(v)
    return v


def typed(a):
    if isinstance(a, dict) and set(a.keys()) == {"bytes"}:
        return dbus.ByteArray(bytes.fromhex(a["bytes"]))
    if isinstance(a, dict):
        return dbus.Dictionary({str(k): str(v) for k, v in a.items()}, signature="ss")
    return a


def in_signatures():
    """Method -> input signature, from the interface XML jami-daemon installs (so that, e.g.,
    sendMessage's flag goes out as the `i` the daemon expects)."""
    import xml.etree.ElementTree as ET
    sigs = {}
    try:
        root = ET.parse(XML).getroot()
    except (OSError, ET.ParseError):
        return sigs
    for m in root.iter("method"):
        sigs[m.get("name")] = "".join(a.get("type") for a in m.iter("arg")
                                      if a.get("direction", "in") == "in")
    return sigs


class Agent:
    def __init__(self, bus_address):
        dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
        self.bus = dbus.bus.BusConnection(bus_address)
        self.loop = GLib.MainLoop()
        self.signals = []  # (seq, name, args, t)
        self.waiters = []  # (req, deadline)
        self.buf = b""
        self.cm = None
        self.sigs = in_signatures()
        self.bus.add_signal_receiver(self.on_signal, dbus_interface=IFACE,
                                     member_keyword="member", path=PATH)

    def proxy(self):
        if self.cm is None:
            obj = self.bus.get_object(SERVICE, PATH, introspect=False)
            self.cm = dbus.Interface(obj, IFACE)
        return self.cm

    def send(self, obj):
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    def on_signal(self, *args, member=None):
        seq = len(self.signals) + 1
        self.signals.append((seq, member, [plain(a) for a in args], time.monotonic() - START))
        self.check_waiters()

    def match(self, req, sig):
        seq, name, args, _ = sig
        if name != req["signal"] or seq <= req.get("since", 0):
            return False
        for k, v in req.get("match", {}).items():
            i = int(k)
            if i >= len(args) or args[i] != v:
                return False
        return True

    def check_waiters(self):
        now = time.monotonic()
        keep = []
        for req, deadline in self.waiters:
            hit = next((s for s in self.signals if self.match(req, s)), None)
            if hit is not None:
                self.send({"id": req["id"], "ok": {"seq": hit[0], "args": hit[2], "t": hit[3]}})
            elif now >= deadline:
                self.send({"id": req["id"], "err": "timeout waiting for " + req["signal"]})
            else:
                keep.append((req, deadline))
        self.waiters = keep

    def tick(self):
        self.check_waiters()
        return True

    def on_stdin(self, fd, cond):
        data = os.read(fd, 65536)
        if not data:
            self.loop.quit()
            return False
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            if line.strip():
                self.handle(json.loads(line))
        return True

    def handle(self, req):
        rid = req.get("id")
        op = req.get("op")
        try:
            if op == "call":
                fn = getattr(self.proxy(), req["method"])
                kw = {"timeout": float(req.get("timeout", 30))}
                if req["method"] in self.sigs:
                    kw["signature"] = self.sigs[req["method"]]
                res = fn(*[typed(a) for a in req.get("args", [])], **kw)
                self.send({"id": rid, "ok": plain(res)})
            elif op == "wait_signal":
                self.waiters.append((req, time.monotonic() + float(req.get("timeout", 30))))
                self.check_waiters()
            elif op == "wait_details":
                self.wait_details(req, time.monotonic() + float(req.get("timeout", 30)))
            elif op == "signals":
                since = req.get("since", 0)
                self.send({"id": rid, "ok": [[s[0], s[1], s[2], s[3]]
                                             for s in self.signals if s[0] > since]})
            elif op == "http_get":
                with urllib.request.urlopen(req["url"], timeout=float(req.get("timeout", 5))) as r:
                    self.send({"id": rid, "ok": r.read().decode("utf-8", "replace")})
            elif op == "quit":
                self.send({"id": rid, "ok": None})
                self.loop.quit()
            else:
                self.send({"id": rid, "err": "unknown op"})
        except Exception as e:  # report, keep serving
            self.send({"id": rid, "err": (type(e).__name__ + ": " + str(e)).splitlines()[0]})

    def wait_details(self, req, deadline):
        def poll():
            try:
                cm = self.proxy()
                get = cm.getVolatileAccountDetails if req.get("volatile", True) \
                    else cm.getAccountDetails
                d = plain(get(req["account"], timeout=10))
            except Exception as e:
                d = None
                err = (type(e).__name__ + ": " + str(e)).splitlines()[0]
            else:
                err = None
            want = req.get("value")
            got = None if d is None else d.get(req["key"])
            if got is not None and (got == want or (want is None and got != "")):
                self.send({"id": req["id"], "ok": d})
                return False
            if time.monotonic() >= deadline:
                self.send({"id": req["id"], "err": "timeout: %s is %r (%s)" % (
                    req["key"], None if d is None else d.get(req["key"]), err or "no error")})
                return False
            return True
        if poll():
            GLib.timeout_add(100, poll)

    def run(self):
        GLib.io_add_watch(0, GLib.IO_IN | GLib.IO_HUP, self.on_stdin)
        GLib.timeout_add(100, self.tick)
        self.send({"ready": True})
        self.loop.run()


if __name__ == "__main__":
    Agent(sys.argv[1]).run()
