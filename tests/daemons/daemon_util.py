"""What the daemon integration tests share (check_daemons.py, check_protocol_fields.py,
check_daemon_limits.py, check_private_state.py here; wait_for also tests/parallel/
check_job_failures.py): a framed-JSON connection to a daemon on 127.0.0.1, a client's hello and
cluster_status, wait_for, the PASS/FAIL line of each check with the closing 'N passed, M failed'
and exit code, and starting moreh-scheduler / moreh-worker with a private cluster key file and
reading a daemon's port file.

A script imports it after putting its own directory first on sys.path (the scripts are run by
path from any directory):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from daemon_util import ...  # noqa: E402
"""
import json
import os
import socket
import struct
import subprocess
import sys
import time

# A fresh cluster key for each test run (each script is its own process).
KEY = "test-cluster-key-" + os.urandom(8).hex()


class Conn:
    """One connection to a daemon on 127.0.0.1. A frame: a 4-byte big-endian length, then that
    many bytes of JSON."""
    separators = None  # json.dumps's separators for send(); a subclass may send compact JSON

    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def send_raw(self, data):
        self.s.sendall(data)

    def send(self, msg):
        body = json.dumps(msg, separators=self.separators).encode()
        self.s.sendall(struct.pack(">I", len(body)) + body)

    def recv(self, timeout=5):
        """The next message; None when the daemon closed (or reset) the connection. Raises
        socket.timeout when none comes within `timeout` seconds."""
        self.s.settimeout(timeout)
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= 4 + n:
                    m = json.loads(self.buf[4:4 + n])
                    self.buf = self.buf[4 + n:]
                    return m
            try:
                chunk = self.s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not chunk:
                return None
            self.buf += chunk

    def closed(self, timeout=5):
        """Whether the daemon closes the connection within `timeout` seconds (what it sends
        before is read and dropped)."""
        self.s.settimeout(timeout)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def client(port, token="user-token"):
    """A connection to the scheduler after a client hello with `token`."""
    c = Conn(port)
    c.send({"type": "hello", "version": 1, "role": "client", "token": token})
    r = c.recv()
    assert r is not None and r["type"] == "hello_ok", r
    return c


def cluster_status(port):
    """The scheduler's cluster_status reply's 'cluster' object, on a connection of its own."""
    c = client(port)
    c.send({"type": "cluster_status"})
    st = c.recv()["cluster"]
    c.close()
    return st


def wait_for(pred, secs, ignore=()):
    """Whether pred() comes true within secs seconds (asked every 50 ms); an exception of a type
    in `ignore` counts as not yet, any other propagates."""
    t0 = time.time()
    while time.time() - t0 < secs:
        try:
            if pred():
                return True
        except ignore:
            pass
        time.sleep(0.05)
    return False


class Checks:
    """The PASS/FAIL line of each check and the summary:
        check = Checks()
        check("name", ok, detail)   # 'PASS  name', or 'FAIL  name  detail'
        check.finish()              # 'N passed, M failed'; exits 0 only if all (and some) passed
    """

    def __init__(self):
        self.results = []

    def __call__(self, name, ok, detail=""):
        self.results.append(bool(ok))
        print(f"{'PASS' if ok else 'FAIL'}  {name}{'' if ok else '  ' + str(detail)}", flush=True)

    def all_passed(self):
        return bool(self.results) and all(self.results)

    def finish(self, note=""):
        """Prints 'N passed, M failed' (then `note`) and exits with 0 or 1."""
        passed = sum(self.results)
        print(f"{passed} passed, {len(self.results) - passed} failed{note}")
        sys.exit(0 if self.all_passed() else 1)


def write_key_file(path, key=KEY):
    """A cluster key file only its owner may read (the daemons refuse one that others may)."""
    with open(path, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return path


def read_port(port_file, secs=10, what="scheduler"):
    """The port a daemon writes to its port file once it listens, waiting up to secs for it;
    AssertionError '<what> did not start' if it does not come."""
    assert wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(), secs,
                    ignore=(OSError,)), f"{what} did not start"
    return int(open(port_file).read())


class Daemons:
    """The daemons a test starts from the binaries in bin_dir with the cluster key file key_file.
    Every process started here is kept in `procs` (a test may add its own) for kill_all()."""

    def __init__(self, bin_dir, key_file):
        self.bin, self.key_file = bin_dir, key_file
        self.procs = []

    def scheduler_cmd(self, port_file, *extra, key_file=None):
        return [os.path.join(self.bin, "moreh-scheduler"), "--key-file", key_file or self.key_file,
                "--port-file", port_file, *extra]

    def start(self, cmd, **popen_kw):
        """cmd as a process (output to /dev/null unless popen_kw says otherwise), kept in procs."""
        kw = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        kw.update(popen_kw)
        p = subprocess.Popen(cmd, **kw)
        self.procs.append(p)
        return p

    def start_scheduler(self, port_file, *extra, key_file=None, **popen_kw):
        """moreh-scheduler writing its port to port_file (read it with read_port)."""
        return self.start(self.scheduler_cmd(port_file, *extra, key_file=key_file), **popen_kw)

    def start_worker(self, sched_port, devices, *extra, node=None, **popen_kw):
        """moreh-worker serving `devices` (as --devices takes them) for the scheduler on
        127.0.0.1:sched_port, as node `node` if given."""
        cmd = [os.path.join(self.bin, "moreh-worker"), "--scheduler", f"127.0.0.1:{sched_port}",
               "--devices", devices]
        if node is not None:
            cmd += ["--node", node]
        return self.start(cmd + ["--key-file", self.key_file, *extra], **popen_kw)

    def kill_all(self):
        """SIGKILL to each process in procs that still runs, and waits for it."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
