#!/usr/bin/env python3
"""Every field of every message type of both daemons (moreh-scheduler, moreh-worker), replaced by
each wrong JSON type (string, integer, fractional number, boolean, null, array, object) and by
out-of-range values (integers below or above the field's range, 2**63, 2**64, 10**30; over-long,
empty or unknown-enum strings; over-long or empty arrays), and each required field removed, before
and after authentication:
- after hello: the reply is an error whose message names the field in single quotes as the daemon
  writes it ('pid', 'devices[0].memory_bytes'), and the same connection serves the next request;
- as the first message (a mutated hello): an error naming the field, and the daemon closes the
  connection; any other type as the first message: "the first message must be 'hello'", closed;
- a second hello: "hello was already said", the connection stays;
- messages without fields take extra junk fields;
- both daemons still run at the end, and a fresh client allocates and releases.
The field lists follow runtime/net/protocol.cc (each FromJson, CheckWorkerRequest). Ends with
'N passed, M failed'."""
import argparse
import copy
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import daemon_util  # noqa: E402
from daemon_util import KEY, Checks, Daemons, read_port, wait_for, write_key_file  # noqa: E402

INT64_MAX = 2**63 - 1
INT64_MIN = -2**63
U64_MAX = 2**64 - 1
LONG = "a" * 5000
REMOVE = object()  # "remove the field"
PUSHED = {"lease_lost", "lease_granted", "drop_lease"}  # unsolicited; skipped by replies
# What a wait_for here takes for "not yet" (a daemon not listening yet, a refused hello).
NOT_YET = (OSError, RuntimeError, TypeError, KeyError)


class Conn(daemon_util.Conn):
    """daemon_util.Conn sending compact JSON, counting the requests, and asking: a request and
    its reply, pushed messages skipped."""
    separators = (",", ":")
    sent = 0  # requests sent, all connections

    def send(self, msg):
        Conn.sent += 1
        super().send(msg)

    def reply(self, timeout=5):
        """The next message that is not a push; None on EOF or time-out."""
        try:
            while True:
                m = self.recv(timeout)
                if m is None or m.get("type") not in PUSHED:
                    return m
        except (socket.timeout, OSError):
            return None

    def ask(self, msg, timeout=5):
        try:
            self.send(msg)
        except OSError:
            return None
        return self.reply(timeout)


class Session:
    """An authenticated connection that is opened again (and the loss recorded by the caller)
    when a defect closes it."""

    def __init__(self, port, hello, name):
        self.port, self.hello, self.name = port, hello, name
        self.c = None
        self.connect()

    def connect(self):
        if self.c:
            self.c.close()
        self.c = Conn(self.port)
        r = self.c.ask(self.hello)
        if not r or r.get("type") != "hello_ok":
            raise RuntimeError(f"{self.name}: hello refused: {r}")

    def ask(self, msg, timeout=5):
        return self.c.ask(msg, timeout)


# ---- field specs ---------------------------------------------------------------------------------
class Field:
    def __init__(self, path, kind, lo=None, hi=None, maxlen=4096, nonempty=False, enum=None,
                 maxsize=None, required=True, invalid=()):
        self.path, self.kind = path, kind
        self.lo, self.hi = lo, hi
        self.maxlen, self.nonempty, self.enum, self.maxsize = maxlen, nonempty, enum, maxsize
        self.required = required
        self.invalid = list(invalid)  # values of the right type that must still be refused

    @property
    def name(self):
        out = ""
        for p in self.path:
            out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + p
        return out

    def valid(self, v):
        k = self.kind
        if k in ("int", "u64"):
            return type(v) is int and self.lo <= v <= self.hi
        if k == "num":
            return type(v) in (int, float) and self.lo <= v <= self.hi
        if k == "str":
            return (type(v) is str and len(v.encode()) <= self.maxlen and
                    not (self.nonempty and v == "") and (self.enum is None or v in self.enum))
        if k == "bool":
            return type(v) is bool
        if k == "array":
            return type(v) is list and len(v) <= self.maxsize and not (self.nonempty and not v)
        if k == "object":
            return type(v) is dict
        raise ValueError(k)

    def bad_values(self):
        c = ["x", 7, 1.5, True, None, [], {}]
        if self.kind in ("int", "u64"):
            top = U64_MAX if self.kind == "u64" else INT64_MAX
            c += [-1, 0, 2**63, 2**64, 10**30]
            if self.lo > (0 if self.kind == "u64" else INT64_MIN):
                c.append(self.lo - 1)
            if self.hi < top:
                c.append(self.hi + 1)
        elif self.kind == "num":
            c += [-1, -0.5, 2**64, 1e30]
            if self.lo > -1e308:
                c.append(self.lo - 1)
            if self.hi < 1e308:
                c += [self.hi + 1, self.hi * 10.0]
        elif self.kind == "str":
            c += [LONG, ""]
        elif self.kind == "array":
            c += [[0] * (self.maxsize + 1)]
        out, seen = [], set()
        for v in c + self.invalid:
            key = json.dumps(v)
            if key in seen or (self.valid(v) and v not in self.invalid):
                continue
            seen.add(key)
            out.append(v)
        if self.required:
            out.append(REMOVE)
        return out


def mutate(template, path, v):
    m = copy.deepcopy(template)
    o = m
    for p in path[:-1]:
        o = o[p]
    if v is REMOVE:
        del o[path[-1]]
    else:
        o[path[-1]] = v
    return m


def show(v):
    if v is REMOVE:
        return "<removed>"
    if isinstance(v, str) and len(v) > 40:
        return f"<{len(v)}-char string>"
    if isinstance(v, list) and len(v) > 8:
        return f"<{len(v)}-element array>"
    return json.dumps(v)


def short(r):
    s = json.dumps(r)
    return s if len(s) < 300 else s[:300] + "..."


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    check = Checks()
    t_start = time.time()

    def run_fields(sess, msg, template, fields, follow, follow_ok):
        """Each field of `template` with each bad value, on the authenticated session; the
        follow-up on the same connection must succeed."""
        for f in fields:
            bad = []
            values = f.bad_values()
            for v in values:
                m = mutate(template, f.path, v)
                r = sess.ask(m)
                want = f"'{f.name}'"
                ok = (r is not None and r.get("type") == "error" and
                      want in r.get("message", "") and r.get("request") == msg)
                r2 = sess.ask(follow) if r is not None else None
                ok2 = r2 is not None and r2.get("type") == follow_ok
                if not ok or not ok2:
                    why = short(r) if not ok else f"then {follow['type']} -> {short(r2)}"
                    bad.append(f"{show(v)} -> {why}")
                    if r is None or r2 is None:
                        sess.connect()  # the daemon closed the connection: a defect, go on
            check(f"{msg} '{f.name}' ({len(values)} values)", not bad,
                  f"{len(bad)} wrong of {len(values)}: " + " | ".join(bad[:4]))

    with tempfile.TemporaryDirectory() as d:
        daemons = Daemons(a.bin, write_key_file(os.path.join(d, "key")))
        port_file = os.path.join(d, "port")
        logs = {n: open(os.path.join(d, n + ".log"), "w") for n in ("scheduler", "worker")}
        sched = daemons.start_scheduler(port_file, "--heartbeat-ms", "200", "--dead-after-ms",
                                        "2000", stdout=logs["scheduler"], stderr=subprocess.STDOUT)
        try:
            port = read_port(port_file)
            worker = daemons.start_worker(port, "cpu:2:64M", "--no-profile", node="n0",
                                          stdout=logs["worker"], stderr=subprocess.STDOUT)
            client_hello = {"type": "hello", "version": 1, "role": "client", "token": "t"}
            worker_role_hello = {"type": "hello", "version": 1, "role": "worker", "key": KEY}
            C = Session(port, client_hello, "client")

            def n0_alive():
                r = C.ask({"type": "cluster_status"})
                return any(n["name"] == "n0" and n["alive"] for n in r["cluster"]["nodes"])

            check("the worker registers", wait_for(n0_alive, 15, NOT_YET))
            g = C.ask({"type": "allocate", "request_id": "real", "num_devices": 1})
            check("a real lease is granted", g and g.get("type") == "allocate_ok", g)
            if not g or g.get("type") != "allocate_ok":
                raise RuntimeError("no lease; nothing more can be checked")
            lease, secret = g["lease"], g["secret"]
            dev = g["devices"][0]["device"]
            wport = int(g["devices"][0]["address"].rsplit(":", 1)[1])
            time.sleep(0.3)  # the grant reaches the worker through the scheduler
            worker_hello = {"type": "hello", "version": 1, "lease": lease, "secret": secret}
            W = None
            for _ in range(20):  # the grant may still be on its way on a loaded machine
                try:
                    W = Session(wport, worker_hello, "worker")
                    break
                except RuntimeError:
                    time.sleep(0.2)
            check("the worker admits the real lease", W is not None)
            if W is None:
                raise RuntimeError("the worker refused the real lease; nothing more can be checked")
            status_msg = {"type": "cluster_status"}
            ping = {"type": "ping"}

            # ---- the scheduler, client messages -------------------------------------------------
            run_fields(C, "allocate",
                       {"type": "allocate", "request_id": "fz-1", "pid": 123, "num_devices": 1},
                       [Field(["request_id"], "str", maxlen=128, nonempty=True),
                        Field(["pid"], "int", 0, 2**31 - 1, required=False),
                        Field(["num_devices"], "int", 1, 4096, required=False)],
                       status_msg, "cluster_status_ok")
            run_fields(C, "allocate", {"type": "allocate", "request_id": "fz-2", "device_size": "Small"},
                       [Field(["device_size"], "str", maxlen=255, nonempty=True, required=False)],
                       status_msg, "cluster_status_ok")
            creds = [Field(["lease"], "u64", 1, U64_MAX), Field(["secret"], "str", maxlen=256)]
            for t in ("renew", "release"):
                run_fields(C, t, {"type": t, "lease": lease, "secret": secret}, creds, status_msg,
                           "cluster_status_ok")
            r = C.ask({"type": "renew", "lease": lease, "secret": secret})
            check("renew with the real credentials still works", r and r["type"] == "renew_ok", r)
            for t in ("vdev_add", "vdev_set_size"):
                run_fields(C, t, {"type": t, "size": "Small"},
                           [Field(["size"], "str", maxlen=255, nonempty=True)], status_msg,
                           "cluster_status_ok")
            for t in ("vdev_remove", "vdev_switch"):
                run_fields(C, t, {"type": t, "id": 0}, [Field(["id"], "int", 0, 1 << 20)],
                           status_msg, "cluster_status_ok")
            # A size the table does not know: refused by name, the connection stays.
            bad = []
            for m in ({"type": "allocate", "request_id": "fz-3", "device_size": "Huge"},
                      {"type": "vdev_add", "size": "Huge"}, {"type": "vdev_set_size", "size": "Huge"}):
                r = C.ask(m)
                r2 = C.ask(status_msg)
                if not (r and r["type"] == "error" and "'Huge'" in r.get("message", "") and
                        r2 and r2["type"] == "cluster_status_ok"):
                    bad.append(f"{m['type']} -> {short(r)}, then {short(r2)}")
            check("an unknown device size is refused by name, the connection stays", not bad, bad)
            junk = {"junk": [1, {"a": None}], "x": "y", "size": 5, "id": "z", "device": -1}
            for t, want in (("cluster_status", "cluster_status_ok"), ("vdev_list", "vdevs"),
                            ("vdev_reset", "vdevs")):
                r = C.ask(dict(junk, type=t))
                check(f"{t} with junk fields (client)", r and r["type"] == want, short(r))
            r = C.ask(client_hello)
            r2 = C.ask(status_msg)
            check("scheduler (client): a second hello is refused, the connection stays",
                  r and r["type"] == "error" and "hello was already said" in r.get("message", "")
                  and r2 and r2["type"] == "cluster_status_ok", (short(r), short(r2)))

            # ---- the scheduler, worker messages -------------------------------------------------
            K = Session(port, worker_role_hello, "worker role")
            reg = {"type": "register_worker", "node": "fz", "address": "127.0.0.1:1",
                   "devices": [{"id": 0, "kind": "cpu", "name": "cpu:0", "memory_bytes": 1 << 20}],
                   "profile": {"gemm_flops_f32": 1e9, "memory_bandwidth": 1e9, "threads": 1,
                               "host_cores": 2, "loaded_latency_s": 1e-5, "link_bandwidth": 1e9,
                               "gemm_flops_bf16": 1e9, "gpu_memory_bandwidth": 1e9}}
            r = K.ask(reg)
            check("register_worker (a fake node) is accepted", r and r["type"] == "register_ok", r)
            r = K.ask({"type": "heartbeat"})
            check("heartbeat after register", r and r["type"] == "heartbeat_ok", short(r))
            r = K.ask(dict(junk, type="heartbeat"))
            check("heartbeat with junk fields", r and r["type"] == "heartbeat_ok", short(r))
            r = K.ask(dict(junk, type="cluster_status"))
            check("cluster_status with junk fields (worker role)",
                  r and r["type"] == "cluster_status_ok", short(r))
            dev0 = reg["devices"][0]
            rate = dict(lo=0, hi=1e18, required=False)
            run_fields(K, "register_worker", reg, [
                Field(["node"], "str", maxlen=255, nonempty=True),
                Field(["address"], "str", maxlen=300,
                      invalid=["nohost", "127.0.0.1:0", "127.0.0.1:65536", ":80", "h:", "h:8x"]),
                Field(["devices"], "array", maxsize=4096, nonempty=True,
                      invalid=[[dev0, dev0]]),
                Field(["devices", 0], "object", required=False),  # removed: 'devices' is empty
                Field(["devices", 0, "id"], "int", 0, 65535),
                Field(["devices", 0, "kind"], "str", maxlen=255, enum={"cpu", "cuda"},
                      invalid=["gpu"]),
                Field(["devices", 0, "name"], "str", maxlen=255),
                Field(["devices", 0, "memory_bytes"], "int", 1, 1 << 50),
                Field(["profile"], "object", required=False),
                Field(["profile", "gemm_flops_f32"], "num", **rate),
                Field(["profile", "memory_bandwidth"], "num", **rate),
                Field(["profile", "threads"], "int", 0, 1 << 20, required=False),
                Field(["profile", "host_cores"], "int", 0, 1 << 20, required=False),
                Field(["profile", "loaded_latency_s"], "num", 0, 3600, required=False),
                Field(["profile", "link_bandwidth"], "num", **rate),
                Field(["profile", "gemm_flops_bf16"], "num", **rate),
                Field(["profile", "gpu_memory_bandwidth"], "num", **rate),
            ], status_msg, "cluster_status_ok")
            # The element after a good one is read too.
            run_fields(K, "register_worker",
                       dict(reg, devices=[dev0, dict(dev0, id=1, name="cpu:1")]),
                       [Field(["devices", 1], "object", required=False),
                        Field(["devices", 1, "id"], "int", 0, 65535)],
                       status_msg, "cluster_status_ok")
            r = K.ask(worker_role_hello)
            r2 = K.ask(status_msg)
            check("scheduler (worker role): a second hello is refused, the connection stays",
                  r and r["type"] == "error" and "hello was already said" in r.get("message", "")
                  and r2 and r2["type"] == "cluster_status_ok", (short(r), short(r2)))

            # ---- the worker ---------------------------------------------------------------------
            device = Field(["device"], "int", 0, 65535)
            worker_msgs = [
                ("run_graph", {"device": dev, "graph": {}, "inputs": []},
                 [Field(["graph"], "object"),
                  Field(["inputs"], "array", maxsize=4096, required=False)]),
                ("job_setup", {"device": dev, "assignment": {}}, [Field(["assignment"], "object")]),
                ("job_connect", {"device": dev, "peers": []},
                 [Field(["peers"], "array", maxsize=1 << 16)]),
                ("job_step", {"device": dev, "step": 0, "micro_batches": [], "check_overflow": False,
                              "eval": False},
                 [Field(["step"], "int", 0, INT64_MAX),
                  Field(["micro_batches"], "array", maxsize=4096),
                  Field(["check_overflow"], "bool", required=False),
                  Field(["eval"], "bool", required=False)]),
                ("job_grad_norm", {"device": dev}, []),
                ("job_update", {"device": dev, "lr": 0.001, "grad_scale": 1.0, "skip": False},
                 [Field(["lr"], "num", 0, 1.7976931348623157e308),
                  Field(["grad_scale"], "num", 0, 1.7976931348623157e308, required=False),
                  Field(["skip"], "bool", required=False)]),
                ("job_save", {"device": dev, "tmp_dir": os.path.join(d, "save"), "dtype": "f32"},
                 [Field(["tmp_dir"], "str", maxlen=4096, nonempty=True),
                  Field(["dtype"], "str", maxlen=255, enum={"f32", "bf16", "f16"},
                        invalid=["f64", "F32"])]),
                ("job_end", {"device": dev}, []),
            ]
            for t, body, fields in worker_msgs:
                run_fields(W, t, dict(body, type=t), [device] + fields, ping, "ping_ok")
            bad = []
            for t, body, _ in worker_msgs:
                for other in (1 - dev, 99):
                    r = W.ask(dict(body, type=t, device=other))
                    r2 = W.ask(ping)
                    if not (r and r["type"] == "error" and "not part of lease" in r.get("message", "")
                            and r2 and r2["type"] == "ping_ok"):
                        bad.append(f"{t} device {other} -> {short(r)}, then {short(r2)}")
            check(f"worker: each request for a device outside the lease is refused "
                  f"({2 * len(worker_msgs)})", not bad, bad)
            r = W.ask(dict(junk, type="ping"))
            check("ping with junk fields", r and r["type"] == "ping_ok", short(r))
            r = W.ask(worker_hello)
            r2 = W.ask(ping)
            check("worker: a second hello is refused, the connection stays",
                  r and r["type"] == "error" and "hello was already said" in r.get("message", "")
                  and r2 and r2["type"] == "ping_ok", (short(r), short(r2)))

            # ---- hello, the first message: refused by field, the connection closed ---------------
            def hello_fields(p, daemon, template, fields):
                for f in fields:
                    bad = []
                    values = f.bad_values()
                    for v in values:
                        k = Conn(p)
                        r = k.ask(mutate(template, f.path, v))
                        ok = (r is not None and r.get("type") == "error" and
                              f"'{f.name}'" in r.get("message", ""))
                        closed = k.closed()
                        k.close()
                        if not ok or not closed:
                            bad.append(f"{show(v)} -> {short(r)}{'' if closed else ', not closed'}")
                    check(f"{daemon} hello '{f.name}' ({len(values)} values, each a fresh "
                          f"connection)", not bad, f"{len(bad)} wrong: " + " | ".join(bad[:4]))

            version = Field(["version"], "int", 0, 1 << 20)
            hello_fields(port, "scheduler", client_hello, [
                version, Field(["role"], "str", maxlen=255, enum={"worker", "client"},
                               invalid=["admin", "Client"]),
                Field(["token"], "str", maxlen=256, nonempty=True)])
            hello_fields(port, "scheduler (worker role)", worker_role_hello,
                         [Field(["key"], "str", maxlen=256)])
            hello_fields(wport, "worker", worker_hello,
                         [version, Field(["lease"], "u64", 1, U64_MAX),
                          Field(["secret"], "str", maxlen=256)])
            bad = []
            for p, hello in ((port, client_hello), (wport, worker_hello)):
                k = Conn(p)
                r = k.ask(dict(hello, version=2))
                if not (r and r["type"] == "error" and "version" in r.get("message", "")
                        and k.closed()):
                    bad.append(f"port {p}: {short(r)}")
                k.close()
            check("hello with protocol version 2: refused, closed (both daemons)", not bad, bad)

            # Anything else first: refused, the connection closed.
            firsts = [(port, {"type": t, "x": 1}) for t in (
                "register_worker", "heartbeat", "allocate", "renew", "release", "vdev_list",
                "vdev_add", "vdev_remove", "vdev_switch", "vdev_set_size", "vdev_reset",
                "cluster_status")]
            firsts += [(port, dict(reg)), (port, {"type": "allocate", "request_id": "q", "num_devices": 1})]
            firsts += [(wport, dict(body, type=t)) for t, body, _ in worker_msgs]
            firsts += [(wport, {"type": "ping"})]
            for daemon, p0 in (("scheduler", port), ("worker", wport)):
                bad = []
                n = 0
                for p, m in firsts:
                    if p != p0:
                        continue
                    n += 1
                    k = Conn(p)
                    r = k.ask(m)
                    closed = k.closed()
                    k.close()
                    if not (r and r["type"] == "error" and
                            "the first message must be 'hello'" in r.get("message", "") and closed):
                        bad.append(f"{m['type']} -> {short(r)}{'' if closed else ', not closed'}")
                check(f"{daemon}: {n} non-hello first messages refused, connection closed",
                      not bad, bad)

            # ---- still up, still serving ---------------------------------------------------------
            check("both daemons still run", sched.poll() is None and worker.poll() is None,
                  (sched.poll(), worker.poll()))
            r = C.ask(status_msg)
            r2 = W.ask(ping)
            check("the long-lived connections still serve",
                  r and r["type"] == "cluster_status_ok" and r2 and r2["type"] == "ping_ok",
                  (short(r), short(r2)))
            w2 = Session(wport, worker_hello, "worker again")
            r = w2.ask(ping)
            check("a fresh worker connection with the real lease serves", r and r["type"] == "ping_ok", r)
            w2.c.close()
            fresh = Session(port, dict(client_hello, token="fresh"), "fresh client")
            g2 = fresh.ask({"type": "allocate", "request_id": "fresh", "num_devices": 1})
            r = fresh.ask({"type": "release", "lease": g2.get("lease"), "secret": g2.get("secret")}) \
                if g2 and g2.get("type") == "allocate_ok" else None
            check("a fresh client allocates and releases",
                  g2 and g2["type"] == "allocate_ok" and r and r["type"] == "release_ok",
                  (short(g2), short(r)))
            r = C.ask({"type": "release", "lease": lease, "secret": secret})
            check("the real lease releases", r and r["type"] == "release_ok", short(r))
            for s in (C, K, W, fresh):
                s.c.close()
        except Exception as e:  # noqa: BLE001 - a broken run is a failure with its reason
            check("the run completed", False, repr(e))
        finally:
            daemons.kill_all()
            for n, f in logs.items():
                f.close()
            if not all(check.results):
                for n in logs:
                    tail = open(os.path.join(d, n + ".log")).read()[-2000:]
                    print(f"--- {n} log (tail) ---\n{tail}")
    check.finish(f"  ({Conn.sent} requests, {time.time() - t_start:.1f} s)")


if __name__ == "__main__":
    main()
