#!/usr/bin/env python3
"""The daemons' connection limits as real processes on 127.0.0.1 (docs/protocol.md, "Bounded
resources"): 500 connections to each daemon holding a half-sent frame under the pre-hello limit
grow its memory by little, a normal client is served meanwhile, and the daemon closes them all
within the hello deadline; a frame over the pre-hello limit is refused by name; an authenticated
connection that stays silent is closed after the idle time-out (scheduler and worker); beyond
--max-connections a newcomer gets an error frame and is closed, and is served again once others
leave; the daemons' memory comes back. Ends with 'N passed, M failed'."""
import argparse
import os
import resource
import selectors
import socket
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import Checks, Conn, Daemons, client, cluster_status, read_port, wait_for, \
    write_key_file  # noqa: E402

FLOOD = 500
AUTH_MS = 3000
SCHED_IDLE_MS = 4000
WORKER_IDLE_MS = 2000
# What a wait_for here takes for "not yet" (a daemon not listening yet, a refused hello).
NOT_YET = (OSError, AssertionError, KeyError, TypeError)


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def closed_after(conn, secs, since=None):
    """Seconds from `since` (default: now) until the peer closes `conn` (replies before the close
    are read and dropped), or None if it is still open `secs` after `since`."""
    t0 = time.time() if since is None else since
    conn.s.settimeout(0.2)
    while time.time() - t0 < secs:
        try:
            if not conn.s.recv(65536):
                return time.time() - t0
        except (ConnectionResetError, BrokenPipeError):
            return time.time() - t0
        except socket.timeout:
            pass
    return None


def open_flood(port, n):
    """n connections, each announcing a 60000-byte frame and sending 59000 bytes of it. Returns
    the sockets (a connection the daemon already closed while it was being written counts as
    closed: None)."""
    head = struct.pack(">I", 60000) + b"x" * 59000
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            s.sendall(head)
        except (ConnectionResetError, BrokenPipeError):
            s.close()
            s = None
        socks.append(s)
    return socks


def wait_all_closed(socks, secs):
    """Reads every socket until the daemon closes it; returns how many are still open after secs."""
    sel = selectors.DefaultSelector()  # epoll: the descriptors go far beyond select()'s 1024
    open_ = 0
    for s in socks:
        if s is None:
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        open_ += 1
    deadline = time.time() + secs
    while open_ and time.time() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            if not data:
                sel.unregister(s)
                open_ -= 1
    sel.close()
    return open_


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    check = Checks()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < 2 * FLOOD + 200:
        print(f"FAIL  open-file limit {soft} is too low for {2 * FLOOD} connections")
        print("0 passed, 1 failed")
        sys.exit(1)

    with tempfile.TemporaryDirectory() as d:
        daemons = Daemons(a.bin, write_key_file(os.path.join(d, "key")))

        def start_scheduler(name, *extra):
            pf = os.path.join(d, name + ".port")
            p = daemons.start_scheduler(pf, *extra)
            return p, read_port(pf, what=f"scheduler {name}")

        def start_worker(sched_port, node, *extra):
            return daemons.start_worker(sched_port, "cpu:1:64M", "--no-profile", *extra, node=node)

        def alive_nodes(port):
            return {n["name"] for n in cluster_status(port)["nodes"] if n["alive"]}

        try:
            sched, port = start_scheduler("main", "--auth-timeout-ms", str(AUTH_MS),
                                          "--idle-timeout-ms", str(SCHED_IDLE_MS))
            worker = start_worker(port, "w0", "--auth-timeout-ms", str(AUTH_MS))
            assert wait_for(lambda: "w0" in alive_nodes(port), 15, NOT_YET), \
                "the worker did not register"
            # A lease on the worker, for the normal worker client during the flood.
            holder = client(port)
            holder.send({"type": "allocate", "request_id": "limits-1", "num_devices": 1})
            g = holder.recv()
            assert g["type"] == "allocate_ok", g
            wport = int(g["devices"][0]["address"].rsplit(":", 1)[1])
            time.sleep(0.3)  # the grant reaches the worker through the scheduler

            rss0 = {"scheduler": rss_mb(sched.pid), "worker": rss_mb(worker.pid)}
            print(f"      RSS at start: scheduler {rss0['scheduler']:.1f} MB, "
                  f"worker {rss0['worker']:.1f} MB", flush=True)

            # 1. The flood: 500 half-sent frames to each daemon, held.
            t_flood = time.time()
            flood = {"scheduler": open_flood(port, FLOOD), "worker": open_flood(wport, FLOOD)}
            t_opened = time.time()
            print(f"      opened {2 * FLOOD} flood connections in {t_opened - t_flood:.1f} s",
                  flush=True)

            # 2. A normal client is served while they are held.
            t2 = time.time()
            try:
                c = client(port, "flood-time-user")
                c.send({"type": "cluster_status"})
                r = c.recv()
                c.close()
                sched_ok = r is not None and r["type"] == "cluster_status_ok"
            except (OSError, AssertionError, KeyError, TypeError) as e:
                sched_ok, r = False, repr(e)
            dt = time.time() - t2
            check(f"during the flood the scheduler serves a client: hello, cluster_status "
                  f"({dt:.2f} s)", sched_ok and dt < 2.0, r)
            t2 = time.time()
            try:
                w = Conn(wport)
                w.send({"type": "hello", "version": 1, "lease": g["lease"], "secret": g["secret"]})
                h = w.recv()
                w.send({"type": "ping"})
                r = w.recv()
                w.close()
                worker_ok = h is not None and h["type"] == "hello_ok" and r is not None and \
                    r["type"] == "ping_ok"
            except OSError as e:
                worker_ok, h, r = False, repr(e), None
            dt = time.time() - t2
            check(f"during the flood the worker serves the lease holder: hello, ping ({dt:.2f} s)",
                  worker_ok and dt < 2.0, (h, r))

            time.sleep(0.5)
            growth = {k: rss_mb(p.pid) - rss0[k] for k, p in (("scheduler", sched), ("worker", worker))}
            for k in ("scheduler", "worker"):
                check(f"{FLOOD} half-sent frames grow the {k}'s RSS by {growth[k]:.1f} MB (< 100 MB)",
                      growth[k] < 100, growth)

            # 3. The daemon closes every flood connection within the hello deadline.
            limit = AUTH_MS / 1000.0 + 4.0 - (time.time() - t_opened)
            left = {k: wait_all_closed(v, max(limit, 0.5)) for k, v in flood.items()}
            took = time.time() - t_opened
            for k in ("scheduler", "worker"):
                check(f"the {k} closed all {FLOOD} flood connections ({took:.1f} s after the "
                      f"last opened)", left[k] == 0, f"{left[k]} still open")
            for v in flood.values():
                for s in v:
                    if s is not None:
                        s.close()
            check("both daemons are alive after the flood",
                  sched.poll() is None and worker.poll() is None and "w0" in alive_nodes(port))

            # 4. A frame over the pre-hello limit: refused by name, closed at once.
            for k, p in (("scheduler", port), ("worker", wport)):
                k4 = Conn(p)
                t4 = time.time()
                k4.send_raw(struct.pack(">I", 1 << 20))
                r = k4.recv()
                gone = closed_after(k4, 2.0)
                k4.close()
                check(f"{k}: a 1 MiB frame before hello: error naming the 65536-byte limit, closed",
                      r is not None and r.get("type") == "error" and "65536" in r.get("message", "")
                      and gone is not None and time.time() - t4 < 1.5, (r, gone))

            # 5. Idle time-outs: a silent authenticated scheduler client; a silent lease holder
            # without a job on a worker with --idle-timeout-ms 2000 (watched side by side).
            worker2 = start_worker(port, "w1", "--idle-timeout-ms", str(WORKER_IDLE_MS))
            assert wait_for(lambda: "w1" in alive_nodes(port), 15, NOT_YET), \
                "the second worker did not register"
            holder2 = client(port, "idle-user")
            holder2.send({"type": "allocate", "request_id": "limits-2", "num_devices": 1})
            g2 = holder2.recv()
            assert g2["type"] == "allocate_ok" and g2["devices"][0]["node"] == "w1", g2
            w2port = int(g2["devices"][0]["address"].rsplit(":", 1)[1])
            time.sleep(0.3)
            wc = Conn(w2port)
            wc.send({"type": "hello", "version": 1, "lease": g2["lease"], "secret": g2["secret"]})
            wh = wc.recv()
            t_w = time.time()
            sc = client(port, "silent-user")
            t_s = time.time()
            w_gone = closed_after(wc, 6.0, since=t_w)  # from the hello_ok
            s_gone = closed_after(sc, 9.0, since=t_s)
            check(f"a silent authenticated scheduler client is closed after the idle time-out "
                  f"({s_gone if s_gone is None else round(s_gone, 2)} s; 3 to 8 s)",
                  s_gone is not None and 3.0 <= s_gone <= 8.0, s_gone)
            check(f"a silent lease holder without a job is closed by the worker "
                  f"({w_gone if w_gone is None else round(w_gone, 2)} s; 1.5 to 5 s)",
                  wh is not None and wh["type"] == "hello_ok" and w_gone is not None and
                  1.5 <= w_gone <= 5.0, (wh, w_gone))
            sc.close()
            wc.close()

            # 6. --max-connections 20: the 21st is refused with the reason; room frees with closes.
            small, sport = start_scheduler("small", "--max-connections", "20")
            held = [client(sport, f"cap-user-{i}") for i in range(20)]
            extra = Conn(sport)
            r = extra.recv()
            gone = closed_after(extra, 2.0)
            extra.close()
            check("connection cap: the 21st gets an error frame naming the cap of 20 and is closed",
                  r is not None and r.get("type") == "error" and
                  "serves at most 20 connections" in r.get("message", "") and gone is not None,
                  (r, gone))
            for c in held[:5]:
                c.close()

            def served():
                c = client(sport, "after-cap")
                c.send({"type": "cluster_status"})
                ok = c.recv()["type"] == "cluster_status_ok"
                c.close()
                return ok

            check("after 5 of the 20 close, a new client is served", wait_for(served, 5, NOT_YET))
            for c in held[5:]:
                c.close()
            check("the capped scheduler is alive", small.poll() is None)

            # 7. Memory comes back.
            time.sleep(0.3)
            rss1 = {"scheduler": rss_mb(sched.pid), "worker": rss_mb(worker.pid)}
            for k in ("scheduler", "worker"):
                check(f"the {k}'s RSS after everything: {rss1[k]:.1f} MB (start {rss0[k]:.1f} MB, "
                      f"+{rss1[k] - rss0[k]:.1f} MB; < +100 MB)", rss1[k] < rss0[k] + 100, rss1)
            check("all daemons are still up",
                  all(p.poll() is None for p in (sched, worker, worker2, small)))
        finally:
            daemons.kill_all()
    check.finish()


if __name__ == "__main__":
    main()
