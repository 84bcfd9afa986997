#!/usr/bin/env python3
"""moreh-smi, moreh-switch-model (flags and the interactive menu through a pseudo-terminal) and the
one-process-per-virtual-device rule, against a real scheduler and workers on 127.0.0.1.
Ends with 'N passed, M failed'."""
import argparse
import os
import pty
import re
import select
import subprocess
import sys
import tempfile
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    a = ap.parse_args()
    B = a.bin
    results = []

    def check(name, ok, detail=""):
        results.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}  {name}{'' if ok else '  ' + str(detail)[-1500:]}")

    with tempfile.TemporaryDirectory() as d:
        key = os.path.join(d, "key")
        open(key, "w").write(os.urandom(16).hex())
        os.chmod(key, 0o600)
        pf = os.path.join(d, "port")
        procs = [subprocess.Popen([f"{B}/moreh-scheduler", "--key-file", key, "--port-file", pf],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        try:
            while not os.path.exists(pf):
                time.sleep(0.01)
            addr = f"127.0.0.1:{int(open(pf).read())}"
            for i in range(2):
                procs.append(subprocess.Popen(
                    [f"{B}/moreh-worker", "--scheduler", addr, "--key-file", key, "--node", f"n{i}",
                     "--devices", "cpu:2:1G", "--no-profile"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            env = dict(os.environ, MOREH_SCHEDULER=addr, MOREH_TOKEN="alice")

            def run(*args, **kw):
                return subprocess.run([f"{B}/{args[0]}", *args[1:]], capture_output=True, text=True,
                                      env=env, timeout=60, **kw)

            deadline = time.time() + 10
            while time.time() < deadline and "free devices: 4" not in run("moreh-smi", "--cluster").stdout:
                time.sleep(0.1)
            out = run("moreh-smi").stdout
            check("moreh-smi: the default virtual device", "size Small" in out and "idle" in out, out)
            out = run("moreh-smi", "device", "--add", "Medium").stdout
            check("moreh-smi device --add", re.search(r"1\s+Medium\s+2", out) is not None, out)
            run("moreh-smi", "device", "--switch", "1")
            out = run("moreh-smi").stdout
            check("moreh-smi device --switch", "size Medium" in out, out)
            r = run("moreh-smi", "device", "--add", "Huge")
            check("unknown size refused", r.returncode != 0 and "unknown device size 'Huge'" in r.stderr, r.stderr)
            r = run("moreh-smi", "device", "--rm", "9")
            check("unknown id refused", r.returncode != 0 and "no virtual device 9" in r.stderr, r.stderr)
            r = run("moreh-switch-model", "--size", "Large")
            check("moreh-switch-model --size", r.returncode == 0 and 'switched to "Large"' in r.stdout, r)
            check("the size reached the scheduler", "size Large" in run("moreh-smi").stdout)
            out = run("moreh-smi", "--cluster").stdout
            check("moreh-smi --cluster", out.count(" yes ") == 2 and "free devices: 4" in out, out)

            # The interactive menu, as a user types it.
            pid, fd = pty.fork()
            if pid == 0:
                os.execve(f"{B}/moreh-switch-model", [f"{B}/moreh-switch-model"], env)
            buf = b""
            deadline = time.time() + 10
            while b"Selection" not in buf and time.time() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    try:
                        buf += os.read(fd, 4096)
                    except OSError:
                        break
            menu = buf.decode(errors="replace")
            os.write(fd, b"2\n")
            while time.time() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    try:
                        chunk = os.read(fd, 4096)
                    except OSError:
                        break
                    if not chunk:
                        break
                    buf += chunk
            os.waitpid(pid, 0)
            text = buf.decode(errors="replace")
            check("the menu lists the sizes with the current one marked",
                  "Current MoAI Accelerator: Large" in menu and re.search(r"3\. Large\s*:\s+4 device\(s\).*\*", menu) is not None, menu)
            check("choosing 2 switches to Medium", 'switched to "Medium"' in text, text)

            # One process per virtual device: the second waits, says so, then runs.
            first = subprocess.Popen([f"{B}/moreh-run", "connect", "--hold-seconds", "3"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(1.0)
            smi = run("moreh-smi").stdout
            check("moreh-smi shows the process using the device", f"in use by process {first.pid}" in smi, smi)
            t0 = time.time()
            second = run("moreh-run", "connect")
            waited = time.time() - t0
            first.wait(timeout=30)
            msg = f"will resume automatically after process {first.pid} terminates"
            check(f"a second process waits ({waited:.1f} s), says so, then runs",
                  second.returncode == 0 and msg in second.stdout + second.stderr and waited > 1.0,
                  second.stdout + second.stderr)
            # moreh-smi --reset frees a device held by a stuck process.
            stuck = subprocess.Popen([f"{B}/moreh-run", "connect", "--hold-seconds", "30"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
            before = run("moreh-smi").stdout
            run("moreh-smi", "--reset")
            after = run("moreh-smi").stdout
            t0 = time.time()
            third = run("moreh-run", "connect")
            stuck.kill()
            stuck.wait()
            check("moreh-smi --reset frees the device of a stuck process",
                  f"in use by process {stuck.pid}" in before and "idle" in after and
                  third.returncode == 0 and time.time() - t0 < 5, (before, after, third.stderr))
        finally:
            for p in procs:
                p.kill()
                p.wait()
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
