#!/usr/bin/env python3
"""The scheduler and worker daemons as real processes on 127.0.0.1: 4 workers register; allocate
and release (packed onto the fewest nodes); a retried request is granted once; bad messages
(unauthenticated, wrong key, oversized, truncated, deeply nested, garbage, unknown type, wrong
version) are refused and the daemon stays up; kill -9 of a worker marks it dead within the
configured time, its devices leave the pool and the lease holder is told; a lease that is not
renewed expires and frees its devices; the scheduler restarted: workers re-register. Ends with
'N passed, M failed'."""
import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import Checks, Conn, Daemons, client, cluster_status, read_port, wait_for, \
    write_key_file  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    check = Checks()

    with tempfile.TemporaryDirectory() as d:
        key_file = write_key_file(os.path.join(d, "key"))
        daemons = Daemons(a.bin, key_file)
        port_file = os.path.join(d, "port")
        state_dir = os.path.join(d, "state")
        sched_args = ["--heartbeat-ms", "200", "--dead-after-ms", "1000", "--lease-ttl-ms", "1500",
                      "--state-dir", state_dir]
        sched = daemons.start_scheduler(port_file, *sched_args)
        try:
            port = read_port(port_file)
            workers = [daemons.start_worker(port, "cpu:2:256M", node=f"node{i}") for i in range(4)]
            ok = wait_for(lambda: sum(n["alive"] for n in cluster_status(port)["nodes"]) == 4, 15)
            st = cluster_status(port)
            check("4 workers register", ok and st["free_devices"] == 8, st)
            check("workers report a measured profile",
                  all(n["profile"].get("gemm_flops_f32", 0) > 1e8 for n in st["nodes"]), st)

            c = client(port)
            c.send({"type": "allocate", "request_id": "r1", "device_size": "Medium"})
            g = c.recv()
            check("allocate Medium (2 devices) on one node", g["type"] == "allocate_ok" and
                  len({x["node"] for x in g["devices"]}) == 1 and len(g["devices"]) == 2, g)
            c.send({"type": "allocate", "request_id": "r1", "device_size": "Medium"})
            g2 = c.recv()
            check("a retried request is granted once", g2.get("lease") == g["lease"] and
                  cluster_status(port)["free_devices"] == 6, g2)
            c.send({"type": "allocate", "request_id": "r2", "num_devices": 7})
            g3 = c.recv()
            check("too many devices is refused", g3["type"] == "error" and "free" in g3["message"], g3)
            c.send({"type": "allocate", "request_id": "r3", "device_size": "Huge"})
            check("unknown device size named", "unknown device size 'Huge'" in c.recv().get("message", ""))
            # The lease's worker admits its holder and runs a graph on a leased device.
            host, wport = g["devices"][0]["address"].rsplit(":", 1)
            dev = g["devices"][0]["device"]
            time.sleep(0.2)  # the grant reaches the worker through the scheduler
            w = Conn(int(wport))
            w.send({"type": "hello", "version": 1, "lease": g["lease"], "secret": "wrong"})
            check("worker refuses a wrong lease secret", w.recv()["type"] == "error" and w.closed())
            w = Conn(int(wport))
            w.send({"type": "hello", "version": 1, "lease": g["lease"], "secret": g["secret"]})
            check("worker admits the lease holder", w.recv()["type"] == "hello_ok")
            graph = {"format": "moreh-graph", "version": 1,
                     "values": [{"dtype": "f32", "shape": [2, 2]}, {"dtype": "f32", "shape": [2, 2]},
                                {"dtype": "f32", "shape": [2, 2]}],
                     "inputs": [0, 1], "outputs": [2],
                     "nodes": [{"op": "matmul", "inputs": [0, 1], "outputs": [2], "attrs": {}}]}
            import base64
            def t(vals):
                return {"dtype": "f32", "shape": [2, 2],
                        "data": base64.b64encode(struct.pack("<4f", *vals)).decode()}
            w.send({"type": "run_graph", "device": dev, "graph": graph,
                    "inputs": [t([1, 2, 3, 4]), t([5, 6, 7, 8])]})
            r = w.recv(timeout=20)
            out = struct.unpack("<4f", base64.b64decode(r["outputs"][0]["data"])) if r.get("outputs") else None
            check("run_graph on the worker returns the result", out == (19.0, 22.0, 43.0, 50.0), r)
            big = {"format": "moreh-graph", "version": 1, "values": [{"dtype": "f32", "shape": [100000000]}],
                   "inputs": [], "outputs": [0],
                   "nodes": [{"op": "fill", "inputs": [], "outputs": [0],
                              "attrs": {"shape": {"ints": [100000000]}, "dtype": {"str": "f32"},
                                        "value": {"float": 1.0}}}]}
            w.send({"type": "run_graph", "device": dev, "graph": big, "inputs": []})
            r = w.recv(timeout=20)
            check("out of memory on the device comes back as the error", r["type"] == "error" and
                  r.get("code") == "OUT_OF_MEMORY" and "Memory requested : 400000000 bytes" in r["message"], r)
            w.send({"type": "run_graph", "device": 99, "graph": graph, "inputs": []})
            check("a device outside the lease is refused", "not part of lease" in w.recv().get("message", ""))
            # Pipeline-job messages with bad content: each an error naming the problem.
            w.send({"type": "job_step", "device": dev, "step": 0, "micro_batches": []})
            check("job_step before job_setup is refused",
                  "no job on device" in w.recv().get("message", ""))
            w.send({"type": "job_setup", "device": dev, "assignment": 5})
            check("job_setup with a non-object assignment is refused",
                  "'assignment' must be an object, not an integer" in w.recv().get("message", ""))
            w.send({"type": "job_setup", "device": dev,
                    "assignment": {"job": 1, "rank": 0, "world": "two"}})
            check("job_setup names a mistyped field",
                  "field 'world' must be an integer" in w.recv().get("message", ""))
            w.send({"type": "ping"})
            check("the worker serves on after the errors", w.recv()["type"] == "ping_ok")
            w.send({"type": "job_frobnicate", "device": dev})
            r = w.recv()
            check("an unknown message type is refused by name and the connection closed",
                  r["type"] == "error" and "unknown message type 'job_frobnicate'" in r["message"]
                  and w.closed(), r)
            w = Conn(int(wport))
            w.send({"type": "hello", "version": 1, "lease": g["lease"], "secret": g["secret"]})
            w.recv()
            w.send({"type": "ping"})
            check("the worker serves the next connection", w.recv()["type"] == "ping_ok")
            c.send({"type": "release", "lease": g["lease"], "secret": "wrong"})
            check("release with a wrong secret refused", c.recv()["type"] == "error")
            c.send({"type": "release", "lease": g["lease"], "secret": g["secret"]})
            check("release frees the devices", c.recv()["type"] == "release_ok" and
                  cluster_status(port)["free_devices"] == 8)

            # Bad input: each refused, the daemon stays up.
            bad = [
                ("unauthenticated request", lambda k: k.send({"type": "cluster_status"})),
                ("wrong cluster key", lambda k: k.send({"type": "hello", "version": 1, "role": "worker", "key": "nope"})),
                ("wrong protocol version", lambda k: k.send({"type": "hello", "version": 99, "role": "client", "token": "t"})),
                ("garbage bytes", lambda k: k.send_raw(struct.pack(">I", 9) + b"\x00\xffgarbage")),
                ("not an object", lambda k: k.send_raw(struct.pack(">I", 2) + b"[]")),
                ("oversized frame", lambda k: k.send_raw(struct.pack(">I", 64 << 20) + b"{")),
                ("deeply nested", lambda k: k.send_raw((lambda b: struct.pack(">I", len(b)) + b)(
                    b'{"type":"hello","x":' + b"[" * 200 + b"]" * 200 + b"}"))),
            ]
            for name, fn in bad:
                k = Conn(port)
                fn(k)
                reply = k.recv()
                check(f"{name}: error reply, connection closed",
                      reply is not None and reply["type"] == "error" and k.closed(), reply)
            k = Conn(port)
            k.send_raw(struct.pack(">I", 100) + b'{"type": "hel')  # truncated, then hang up
            k.s.close()
            c2 = client(port)
            c2.send({"type": "bogus"})
            r = c2.recv()
            check("unknown type refused", r["type"] == "error" and "unknown message type" in r["message"], r)
            check("the daemon is up after all of it",
                  sched.poll() is None and cluster_status(port)["free_devices"] == 8)

            # A client killed with -9 stops renewing: its lease expires and the devices come back.
            holder = subprocess.Popen([os.path.join(a.bin, "moreh-run"), "connect", "--scheduler",
                                       f"127.0.0.1:{port}", "--device-size", "Medium",
                                       "--hold-seconds", "30"],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            held = wait_for(lambda: cluster_status(port)["free_devices"] == 6, 10)
            time.sleep(1.0)  # past one TTL: the live client renews, so the lease stays
            still_held = cluster_status(port)["free_devices"] == 6
            holder.kill()
            holder.wait()
            freed = wait_for(lambda: cluster_status(port)["free_devices"] == 8, 5)
            check("a killed client's lease expires and frees its devices", held and still_held and freed)

            # kill -9 of a worker holding a lease.
            c3 = client(port)
            c3.send({"type": "allocate", "request_id": "big", "num_devices": 8})
            big = c3.recv()
            check("allocate all 8 devices (4 nodes)", big["type"] == "allocate_ok" and
                  len({x["node"] for x in big["devices"]}) == 4, big)
            t0 = time.time()
            workers[3].send_signal(signal.SIGKILL)
            workers[3].wait()
            lost = c3.recv(timeout=5)
            dt = time.time() - t0
            check(f"killed worker: lease holder told within {dt:.1f} s",
                  lost is not None and lost["type"] == "lease_lost" and dt < 3, lost)
            st = cluster_status(port)
            check("killed worker marked dead, its devices leave the pool",
                  [n["alive"] for n in st["nodes"] if n["name"] == "node3"] == [False], st)
            # Not renewed: the lease expires and the live devices are free again.
            ok = wait_for(lambda: cluster_status(port)["free_devices"] == 6, 5)
            check("an unrenewed lease expires and frees its devices", ok, cluster_status(port))

            # Scheduler crash (kill -9) and restart: the lease survives, workers re-register.
            c4 = client(port)
            c4.send({"type": "allocate", "request_id": "persist", "device_size": "Medium"})
            kept = c4.recv()
            sched.send_signal(signal.SIGKILL)
            sched.wait(timeout=10)
            os.remove(port_file)
            sched = daemons.start_scheduler(port_file, *sched_args, "--port", str(port))
            ok = wait_for(lambda: os.path.exists(port_file), 10)
            c5 = client(port)
            renewed = []

            def renew_and_count():  # the holder keeps its lease alive while workers come back
                c5.send({"type": "renew", "lease": kept["lease"], "secret": kept["secret"]})
                renewed.append(c5.recv()["type"])
                return sum(n["alive"] for n in cluster_status(port)["nodes"]) == 3

            ok = ok and wait_for(renew_and_count, 15)
            check("scheduler killed and restarted: the 3 live workers re-register", ok)
            st = cluster_status(port)
            check("the lease survives the crash", kept["type"] == "allocate_ok" and
                  renewed and set(renewed) == {"renew_ok"} and st["num_leases"] >= 1, (renewed, st))
            c5.send({"type": "release", "lease": kept["lease"], "secret": kept["secret"]})
            check("the restored lease releases with its secret", c5.recv()["type"] == "release_ok")
            # A corrupt database: the scheduler refuses to start, and says why.
            sched.send_signal(signal.SIGTERM)
            sched.wait(timeout=10)
            for f in os.listdir(state_dir):
                os.remove(os.path.join(state_dir, f))
            with open(os.path.join(state_dir, "scheduler.db"), "wb") as f:
                f.write(b"this is not a database" * 100)
            p = subprocess.run(daemons.scheduler_cmd(port_file, *sched_args), capture_output=True,
                               text=True, timeout=20)
            check("a corrupt database stops the start with a clear message",
                  p.returncode != 0 and "corrupt" in (p.stdout + p.stderr), p.stdout + p.stderr)
            # cuda:all: every visible GPU registers; with none (or a build without CUDA) the worker
            # says so and exits. Which one is due depends on whether nvidia-smi finds a GPU here.
            try:
                gpu = subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                     timeout=30).returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                gpu = False
            p = daemons.start_worker(1, "cuda:all", "--no-profile", stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
            try:
                msg = p.communicate(timeout=5)[0]
                check("cuda:all without a GPU (or CUDA) is refused by name", p.returncode == 2 and (
                    ("no CUDA device is visible" in msg and not gpu) or "built without CUDA" in msg),
                      (f"nvidia-smi finds a GPU: {gpu}", msg))
            except subprocess.TimeoutExpired:  # GPUs found: the worker runs (and retries the
                p.kill()                       # unreachable scheduler)
                p.wait()
                check("cuda:all with GPUs starts the worker", gpu,
                      "the worker runs, but nvidia-smi -L finds no GPU: it should have refused")
            # A JSON config file configures the scheduler; a wrong one is refused by name.
            cfg = os.path.join(d, "sched.json")
            with open(cfg, "w") as f:
                json.dump({"port": 0, "key_file": key_file, "state_dir": os.path.join(d, "state2"),
                           "heartbeat_ms": 300, "device_sizes": {"Pair": 2, "Quad": 4}}, f)
            pf2 = os.path.join(d, "port2")
            daemons.start([os.path.join(a.bin, "moreh-scheduler"), "--config", cfg, "--port-file",
                           pf2])
            ok = wait_for(lambda: os.path.exists(pf2), 10)
            check("a JSON config file configures the scheduler",
                  ok and os.path.exists(os.path.join(d, "state2", "scheduler.db")) and
                  cluster_status(int(open(pf2).read()))["nodes"] == [])
            c6 = client(int(open(pf2).read()))
            c6.send({"type": "vdev_set_size", "size": "quad"})
            r6 = c6.recv()
            c6.send({"type": "vdev_set_size", "size": "Small"})
            r7 = c6.recv()
            check("the config replaces the device-size table (names case-insensitive)",
                  r6["type"] == "vdevs" and r6["devices"][0]["num_devices"] == 4 and
                  r7["type"] == "error", (r6, r7))
            with open(cfg, "w") as f:
                json.dump({"port": "x"}, f)
            p = subprocess.run([os.path.join(a.bin, "moreh-scheduler"), "--config", cfg],
                               capture_output=True, text=True, timeout=20)
            check("a malformed config is refused by name",
                  p.returncode == 2 and "'port' has the wrong type" in p.stdout + p.stderr, p.stdout + p.stderr)
        finally:
            daemons.kill_all()
    check.finish()


if __name__ == "__main__":
    main()
