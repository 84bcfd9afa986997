#!/usr/bin/env python3
"""bench/run connect: request -> ready for 4 and 32 local workers. A scheduler and the workers run
first (1 CPU device each); `moreh-run connect --scheduler ...` then requests Large (4 devices) or
4xLarge (32), connects to every granted worker and establishes the links; the time is taken from
its own log timestamps, from 'Requesting resources' to 'MoAI Accelerator is ready to use.'. The
peer is the reference platform's log (../shared/reference/moai-ap-guide.md): 4.9 s from
'Requesting resources' to 'ready' for 4 devices; quoted, not measured here. Then 100 concurrent
clients allocate and release one device each against one scheduler: allocations per second."""
import contextlib
import datetime
import os
import re
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1]


def stamp(line):
    m = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3})\]", line)
    return datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()


@contextlib.contextmanager
def local_cluster(workers, devices):
    """A scheduler and `workers` workers of `devices` CPU devices each; yields the scheduler port."""
    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "key")
        open(key, "w").write(os.urandom(16).hex())
        os.chmod(key, 0o600)
        pf = os.path.join(d, "port")
        procs = [subprocess.Popen([f"{BIN}/moreh-scheduler", "--key-file", key, "--port-file", pf],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            while not os.path.exists(pf):
                time.sleep(0.01)
            port = int(open(pf).read())
            for i in range(workers):
                procs.append(subprocess.Popen(
                    [f"{BIN}/moreh-worker", "--scheduler", f"127.0.0.1:{port}", "--key-file", key,
                     "--node", f"n{i}", "--devices", f"cpu:{devices}:64M", "--no-profile"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            yield port
        finally:
            for p in procs:
                p.kill()
                p.wait()


def run(workers, size, reps=5):
    with local_cluster(workers, 1) as port:
        times = []
        for _ in range(reps):
            out = subprocess.run([f"{BIN}/moreh-run", "connect", "--scheduler", f"127.0.0.1:{port}",
                                  "--device-size", size], capture_output=True, text=True).stdout
            lines = out.splitlines()
            t0 = next(stamp(l) for l in lines if "Requesting resources" in l)
            t1 = next(stamp(l) for l in lines if "is ready to use" in l)
            times.append(1000 * (t1 - t0))
        return sorted(times)[len(times) // 2]


def allocations_per_second(clients=100, seconds=3.0):
    """100 concurrent clients allocating and releasing one device each, as fast as they can, against
    one scheduler with 8 workers x 16 devices."""
    import json as js
    import socket
    import struct
    import threading
    with local_cluster(8, 16) as port:
        time.sleep(1.0)
        counts = [0] * clients
        stop = time.time() + seconds

        def worker(k):
            s = socket.create_connection(("127.0.0.1", port))
            buf = b""

            def call(m):
                nonlocal buf
                b = js.dumps(m).encode()
                s.sendall(struct.pack(">I", len(b)) + b)
                while True:
                    if len(buf) >= 4:
                        n = struct.unpack(">I", buf[:4])[0]
                        if len(buf) >= 4 + n:
                            r = js.loads(buf[4:4 + n])
                            buf = buf[4 + n:]
                            return r
                    buf += s.recv(65536)
            call({"type": "hello", "version": 1, "role": "client", "token": f"u{k}"})
            i = 0
            while time.time() < stop:
                r = call({"type": "allocate", "request_id": f"{k}-{i}", "num_devices": 1})
                i += 1
                if r["type"] == "allocate_ok":
                    call({"type": "release", "lease": r["lease"], "secret": r["secret"]})
                    counts[k] += 1
            s.close()
        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sum(counts) / (time.time() - t0)


ms4 = run(4, "Large")
ms32 = run(32, "4xLarge")
rate = allocations_per_second()
print(f"request -> ready: 4 workers {ms4:.0f} ms, 32 workers {ms32:.0f} ms (median of 5); "
      f"reference platform's log: 4.9 s for 4")
print(f"100 concurrent clients: {rate:.0f} allocate+release pairs/s (python clients share the "
      f"2 cores with the scheduler)")
print(f"BENCH connect_4_workers_ms {ms4:.0f} ms")
print(f"BENCH connect_32_workers_ms {ms32:.0f} ms")
print(f"BENCH connect_4_workers_vs_reference_platform {4900 / max(ms4, 1):.0f} x")
print(f"BENCH allocations_per_s_100_clients {rate:.0f} allocations/s")
