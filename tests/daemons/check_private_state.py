#!/usr/bin/env python3
"""What the scheduler and the embedded local cluster leave on disk is private (docs/protocol.md,
"Secrets and state"): the state directory is 0700 and its files 0600 (also when they were made
wider before), lease secrets and user tokens are stored only as SHA-256 hashes, a schema-1
database with plain-text secrets is converted (its lease still renews with the old secret, and the
plain text is gone from the files), a key file others may read is refused, the local cluster's
directory is 0700 with 0600 files and goes when the client ends, and a directory whose owner is
gone is removed by the next start. Ends with 'N passed, M failed'."""
import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from daemon_util import KEY, Checks, Daemons, client, cluster_status, read_port, wait_for, \
    write_key_file  # noqa: E402

# What a wait_for here takes for "not yet" (a daemon not listening yet, a refused hello).
NOT_YET = (OSError, AssertionError, KeyError, TypeError, ValueError)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def state_files(state_dir):
    return sorted(os.path.join(state_dir, f) for f in os.listdir(state_dir)
                  if f.startswith("scheduler.db"))


def raw_bytes(paths):
    out = b""
    for p in paths:
        with open(p, "rb") as f:
            out += f.read()
    return out


def sha256_hex(s):
    return hashlib.sha256(s.encode()).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    check = Checks()

    run_bin = os.path.join(a.bin, "moreh-run")
    made_dirs = []
    with tempfile.TemporaryDirectory() as d:
        daemons = Daemons(a.bin, write_key_file(os.path.join(d, "key")))

        def start_scheduler(name, state_dir=None, key=None):
            pf = os.path.join(d, name + ".port")
            extra = ["--state-dir", state_dir] if state_dir else []
            p = daemons.start_scheduler(pf, *extra, key_file=key)
            return p, read_port(pf, what=f"scheduler {name}")

        def stop(p):
            p.send_signal(signal.SIGTERM)
            try:
                return p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                return None

        try:
            # 1. A state directory in use: private modes, only hashes of the secrets.
            state = os.path.join(d, "state")
            sched, port = start_scheduler("main", state)
            worker = daemons.start_worker(port, "cpu:1:64M", "--no-profile", node="w0")
            assert wait_for(lambda: any(n["alive"] for n in cluster_status(port)["nodes"]), 15,
                            NOT_YET), "the worker did not register"
            token = "tok-XYZ-" + os.urandom(8).hex()
            c = client(port, token)
            c.send({"type": "allocate", "request_id": "private-1", "num_devices": 1})
            g = c.recv()
            c.send({"type": "renew", "lease": g.get("lease"), "secret": g.get("secret")})
            rn = c.recv()
            c.send({"type": "vdev_add", "size": "Medium"})
            vd = c.recv()
            check("allocate, renew and vdev_add as a client",
                  g["type"] == "allocate_ok" and rn["type"] == "renew_ok" and vd["type"] == "vdevs",
                  (g, rn, vd))
            secret = g["secret"]
            c.close()
            files = state_files(state)
            check(f"the state directory is 0700 (it is {mode(state):04o})", mode(state) == 0o700)
            check("scheduler.db and its -wal/-shm are 0600 while the scheduler runs: " +
                  ", ".join(f"{os.path.basename(f)} {mode(f):04o}" for f in files),
                  files and all(mode(f) == 0o600 for f in files) and
                  os.path.join(state, "scheduler.db") in files)
            data = raw_bytes(files)
            check("while running, neither the lease secret nor the token is in the files' bytes",
                  secret.encode() not in data and token.encode() not in data)
            rc = stop(sched)
            files = state_files(state)
            data = raw_bytes(files)
            check("after SIGTERM the scheduler exits 0, its files are 0600: " +
                  ", ".join(f"{os.path.basename(f)} {mode(f):04o}" for f in files),
                  rc == 0 and all(mode(f) == 0o600 for f in files), rc)
            check("after the stop, neither the lease secret nor the token is in the files' bytes",
                  secret.encode() not in data and token.encode() not in data)
            copy = os.path.join(d, "copy")
            os.mkdir(copy, 0o700)
            for f in files:
                shutil.copy(f, copy)
            db = sqlite3.connect(os.path.join(copy, "scheduler.db"))
            row = db.execute("SELECT secret_hash, user FROM leases WHERE id = ?",
                             (g["lease"],)).fetchone()
            users = [r[0] for r in db.execute("SELECT user FROM users")]
            db.close()
            check("the leases table holds the SHA-256 hex of the secret and of the token",
                  row is not None and row[0] == sha256_hex(secret) and row[1] == sha256_hex(token),
                  (row, sha256_hex(secret)))
            check("the users table is keyed by the token's SHA-256", sha256_hex(token) in users
                  and token not in users, users)
            stop(worker)

            # 2. A state directory left wider by an older version is tightened at start.
            wide = os.path.join(d, "wide")
            os.mkdir(wide)
            os.chmod(wide, 0o755)
            shutil.copy(os.path.join(copy, "scheduler.db"), os.path.join(wide, "scheduler.db"))
            os.chmod(os.path.join(wide, "scheduler.db"), 0o644)
            s2, _ = start_scheduler("wide", wide)
            files = state_files(wide)
            check(f"a 0755 state directory and a 0644 database are tightened at start: "
                  f"directory {mode(wide):04o}, " +
                  ", ".join(f"{os.path.basename(f)} {mode(f):04o}" for f in files),
                  mode(wide) == 0o700 and files and all(mode(f) == 0o600 for f in files))
            stop(s2)

            # 3. A schema-1 database (plain-text secrets) is converted; its lease still renews.
            old = os.path.join(d, "old")
            os.mkdir(old, 0o700)
            db = sqlite3.connect(os.path.join(old, "scheduler.db"))
            db.executescript(
                "CREATE TABLE nodes (name TEXT PRIMARY KEY, address TEXT, devices TEXT, profile TEXT);"
                "CREATE TABLE leases (id INTEGER PRIMARY KEY, secret TEXT, token TEXT,"
                " request_id TEXT, devices TEXT, expiry_ms INTEGER);"
                "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER);"
                "CREATE TABLE users (token TEXT PRIMARY KEY, state TEXT);")
            db.execute("INSERT INTO nodes VALUES (?, ?, ?, ?)",
                       ("nodeX", "127.0.0.1:1",
                        json.dumps([{"id": 0, "kind": "cpu", "name": "cpu:0",
                                     "memory_bytes": 67108864}]), "{}"))
            db.execute("INSERT INTO leases VALUES (?, ?, ?, ?, ?, ?)",
                       (1, "oldsecret123", "oldtoken", "old-request-1",
                        json.dumps({"devices": [["nodeX", 0]], "vdev": -1, "pid": 0}),
                        int(time.time() * 1000) + 3600 * 1000))
            db.execute("INSERT INTO meta VALUES ('next_lease', 2)")
            db.execute("INSERT INTO users VALUES (?, ?)",
                       ("oldtoken", json.dumps({"current": 0, "devices": [{"id": 0, "size": "Small"}]})))
            db.commit()
            db.close()
            os.chmod(os.path.join(old, "scheduler.db"), 0o600)
            s3, p3 = start_scheduler("old", old)
            c = client(p3, "oldtoken")
            c.send({"type": "renew", "lease": 1, "secret": "oldsecret123"})
            r_ok = c.recv()
            c.send({"type": "renew", "lease": 1, "secret": "oldsecret124"})
            r_bad = c.recv()
            c.send({"type": "vdev_list"})
            r_vd = c.recv()
            c.close()
            check("schema 1 migrated: lease 1 renews with its old secret",
                  r_ok is not None and r_ok["type"] == "renew_ok", r_ok)
            check("schema 1 migrated: a wrong secret is refused",
                  r_bad is not None and r_bad["type"] == "error" and
                  r_bad.get("code") == "UNKNOWN_LEASE", r_bad)
            check("schema 1 migrated: the old token's virtual devices are its own",
                  r_vd is not None and r_vd.get("type") == "vdevs" and
                  [x["size"] for x in r_vd["devices"]] == ["Small"], r_vd)
            rc = stop(s3)
            files = state_files(old)
            data = raw_bytes(files)
            check("after the migration the files hold neither 'oldsecret123' nor 'oldtoken'",
                  rc == 0 and b"oldsecret123" not in data and b"oldtoken" not in data,
                  (rc, [f for f in files]))
            db = sqlite3.connect(f"file:{os.path.join(old, 'scheduler.db')}?mode=ro", uri=True)
            row = db.execute("SELECT secret_hash, user FROM leases WHERE id = 1").fetchone()
            schema = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            db.close()
            check("the migrated lease row holds the hashes (schema 2)",
                  row == (sha256_hex("oldsecret123"), sha256_hex("oldtoken")) and schema == (2,),
                  (row, schema))

            # 4. Key files: one that others may read is refused; a private one is accepted.
            loose = os.path.join(d, "loose-key")
            with open(loose, "w") as f:
                f.write(KEY + "\n")
            os.chmod(loose, 0o644)
            p = subprocess.run(daemons.scheduler_cmd(os.path.join(d, "loose.port"),
                                                     key_file=loose),
                               capture_output=True, text=True, timeout=20)
            out = p.stdout + p.stderr
            check("the scheduler refuses a 0644 key file, naming the problem and 'chmod 600'",
                  p.returncode != 0 and "readable by other users" in out and "chmod 600" in out,
                  (p.returncode, out))
            os.chmod(loose, 0o600)
            s4, p4 = start_scheduler("tight", key=loose)
            check("the scheduler accepts the key file once it is 0600",
                  s4.poll() is None and cluster_status(p4)["nodes"] == [])
            stop(s4)

            # 5. The embedded local cluster's directory is private and goes with the client.
            home = os.path.join(d, "home")
            os.mkdir(home)
            env = dict(os.environ, MOREH_HOME=home)
            for k in ("MOREH_SCHEDULER", "TMPDIR", "TMP", "TEMP", "TEMPDIR"):
                env.pop(k, None)
            log5 = open(os.path.join(d, "connect.log"), "w+")
            held = subprocess.Popen([run_bin, "connect", "--device-size", "Small",
                                     "--device-memory", "64M", "--hold-seconds", "4"],
                                    stdout=log5, stderr=subprocess.STDOUT, env=env)
            daemons.procs.append(held)
            pattern = f"/tmp/moreh-cluster-{held.pid}-*"
            ready = wait_for(lambda: "MoAI Accelerator is ready to use" in
                             open(log5.name).read(), 30, NOT_YET)
            dirs = glob.glob(pattern)
            if len(dirs) == 1:
                cd = dirs[0]
                names = sorted(os.listdir(cd))
                modes = {n: mode(os.path.join(cd, n)) for n in names}
                check(f"the local cluster's directory {cd} is 0700 (it is {mode(cd):04o})",
                      ready and mode(cd) == 0o700, open(log5.name).read())
                check("every file in it is 0600: " +
                      ", ".join(f"{n} {m:04o}" for n, m in modes.items()),
                      all(m == 0o600 for m in modes.values()) and
                      {"key", "owner", "port"} <= set(names) and
                      any(n.endswith(".log") for n in names), modes)
            else:
                check(f"the local cluster's directory {pattern} exists while it holds",
                      False, (dirs, open(log5.name).read()))
                cd = None
            try:
                rc = held.wait(timeout=30)
            except subprocess.TimeoutExpired:
                held.kill()
                rc = held.wait()
            log5.close()
            check("after the client exits normally its directory is gone",
                  rc == 0 and not glob.glob(pattern), (rc, glob.glob(pattern)))

            # 6. Directories whose owner is gone are removed by the next start; live ones stay.
            dead = subprocess.Popen(["/bin/true"])
            dead.wait()
            dead_dir = f"/tmp/moreh-cluster-{dead.pid}-deadbeef"
            live_dir = f"/tmp/moreh-cluster-{os.getpid()}-cafebabe"
            owner_dead_dir = f"/tmp/moreh-cluster-{os.getpid()}-0badf00d"  # its owner file wins
            for p_ in (dead_dir, live_dir, owner_dead_dir):
                os.mkdir(p_, 0o700)
                made_dirs.append(p_)
                with open(os.path.join(p_, "key"), "w") as f:
                    f.write("stale\n")
            with open(os.path.join(owner_dead_dir, "owner"), "w") as f:
                f.write(f"{dead.pid}\n")
            p = subprocess.run([run_bin, "connect", "--device-size", "Small", "--device-memory",
                                "64M", "--hold-seconds", "0"],
                               capture_output=True, text=True, env=env, timeout=60)
            check("moreh-run connect --hold-seconds 0 succeeds", p.returncode == 0,
                  p.stdout + p.stderr)
            check(f"a directory whose owner (pid {dead.pid}, from its name) is gone is removed",
                  not os.path.exists(dead_dir))
            check("a directory whose owner file names a gone process is removed",
                  not os.path.exists(owner_dead_dir))
            check("a directory whose owner is alive is kept", os.path.isdir(live_dir))
        finally:
            daemons.kill_all()
            for p_ in made_dirs:
                shutil.rmtree(p_, ignore_errors=True)
    check.finish()


if __name__ == "__main__":
    main()
