#!/usr/bin/env python3
"""Training jobs and the failures around them, with real daemons on 127.0.0.1 (4 workers, a
scheduler with a state directory), examples/llama-mini on 2 pipeline stages x 2 replicas:

  1. A scheduler killed with -9 mid-training and restarted on the same port and state directory:
     the client reconnects, re-authenticates and renews, the job ends with exit code 0 and exactly
     the losses of an undisturbed run.
  2. A worker killed with -9 mid-step: the error names that worker (not another rank's) and says
     it died, within 5 s.
  3. A worker stopped with SIGSTOP mid-step: the error names that worker and says it stopped
     answering, within 5 s.

usage: check_job_failures.py --bin BUILD/bin --source REPO
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "daemons"))
from training_checks import FAIL, check, losses  # noqa: E402
from daemon_util import wait_for  # noqa: E402

STEPS = 12
RESTART_STEPS = 80  # the scheduler-restart run: long enough to outlast the outage
CONFIG = '{"num_stages": 2, "num_micro_batches": 2}'


class Cluster:
    def __init__(self, bin_dir, tmp):
        self.bin, self.tmp = bin_dir, tmp
        self.key = os.path.join(tmp, "key")
        with open(self.key, "w") as f:
            f.write("failures-test-key-0123456789abcdef")
        os.chmod(self.key, 0o600)
        self.state = os.path.join(tmp, "state")
        self.port_file = os.path.join(tmp, "port")
        self.sched, self.workers, self.port = None, {}, 0
        self.start_scheduler()
        for i in range(4):
            self.start_worker(f"w{i}")
        assert wait_for(lambda: self.alive_workers() == 4, 60), "workers did not register"

    def start_scheduler(self):
        if os.path.exists(self.port_file):
            os.remove(self.port_file)
        cmd = [os.path.join(self.bin, "moreh-scheduler"), "--key-file", self.key, "--port-file",
               self.port_file, "--state-dir", self.state, "--heartbeat-ms", "250",
               "--dead-after-ms", "4000", "--lease-ttl-ms", "8000"]
        if self.port:
            cmd += ["--port", str(self.port)]
        log = open(os.path.join(self.tmp, "scheduler.log"), "a")
        self.sched = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        assert wait_for(lambda: os.path.exists(self.port_file), 20), "scheduler did not start"
        self.port = int(open(self.port_file).read())

    def registrations(self, name):
        try:
            with open(os.path.join(self.tmp, f"{name}.log")) as f:
                return f.read().count("registered with the scheduler")
        except OSError:
            return 0

    def start_worker(self, name):
        log = open(os.path.join(self.tmp, f"{name}.log"), "a")
        self.workers[name] = subprocess.Popen(
            [os.path.join(self.bin, "moreh-worker"), "--scheduler", f"127.0.0.1:{self.port}",
             "--devices", "cpu:1:512M", "--node", name, "--key-file", self.key],
            stdout=log, stderr=subprocess.STDOUT)

    def alive_workers(self):
        out = subprocess.run([os.path.join(self.bin, "moreh-smi"), "--cluster", "--scheduler",
                              f"127.0.0.1:{self.port}"], capture_output=True, text=True,
                             timeout=30).stdout
        return len(re.findall(r"^w\d\s+\S+\s+yes\b", out, re.M))

    def free_devices(self):
        out = subprocess.run([os.path.join(self.bin, "moreh-smi"), "--cluster", "--scheduler",
                              f"127.0.0.1:{self.port}"], capture_output=True, text=True,
                             timeout=30).stdout
        m = re.search(r"free devices: (\d+)", out)
        return int(m.group(1)) if m else -1

    def stop(self):
        for p in [self.sched] + list(self.workers.values()):
            if p and p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--source", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="moreh-failures-")
    home = os.path.join(tmp, "home")
    os.makedirs(home)
    cluster = Cluster(a.bin, tmp)
    env = dict(os.environ, MOREH_HOME=home, MOREH_SCHEDULER=f"127.0.0.1:{cluster.port}",
               MOREH_DEVICE_SIZE="Large", MOREH_ENABLE_ADVANCED_PARALLELIZATION="1",
               MOREH_ADVANCED_PARALLELIZATION_CONFIG=CONFIG)
    for k in ("MOREH_COMPUTE_DTYPE", "MOREH_LOSS_SCALE", "MOREH_WAIT_TIMEOUT"):
        env.pop(k, None)
    train = [os.path.join(a.bin, "moreh-run"), "train", "--model-name-or-path",
             os.path.join(a.source, "examples/llama-mini"), "--dataset",
             os.path.join(a.source, "examples/data/man_summaries.jsonl"), "--block-size", "64",
             "--batch-size", "8", "--lr", "1e-3", "--log-interval", "1", "--no-shuffle"]

    def start(steps, name):
        return subprocess.Popen(train + ["--max-steps", str(steps), "--save-model-dir",
                                         os.path.join(tmp, name)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)

    def read_until(p, step):
        seen = ""
        while f"[Step {step}/" not in seen:
            line = p.stdout.readline()
            if not line:
                break
            seen += line
        return seen

    try:
        # The undisturbed run: the losses to match.
        ref = subprocess.run(train + ["--max-steps", str(STEPS), "--save-model-dir",
                                      os.path.join(tmp, "ref")],
                             env=env, capture_output=True, text=True, timeout=600)
        l_ref = losses(ref.stdout + ref.stderr)
        check("an undisturbed run trains", ref.returncode == 0 and len(l_ref) == STEPS,
              (ref.stdout + ref.stderr)[-3000:])
        check("the devices are free after it", wait_for(lambda: cluster.free_devices() == 4, 10))

        # 1. The scheduler killed with -9 mid-training, restarted 2 s later. The job runs long
        # enough to outlast the outage and the client's reconnection backoff (~3 s) however fast
        # the machine is; its first STEPS losses are the undisturbed run's (constant lr).
        p = start(RESTART_STEPS, "restart")
        head = read_until(p, 3)
        running = p.poll() is None and "[Step 3/" in head
        cluster.sched.send_signal(signal.SIGKILL)
        cluster.sched.wait()
        time.sleep(2.0)
        cluster.start_scheduler()
        try:
            rest, _ = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            rest, _ = p.communicate()
        log = head + rest
        l_restart = losses(log)
        check("scheduler restarted: the job was running when it was killed", running, head[-2000:])
        check("scheduler restarted: the job ends with exit code 0", p.returncode == 0, log[-3000:])
        check("scheduler restarted: the client reconnected and renewed its lease",
              "reconnected to the scheduler" in log, log[-3000:])
        check("scheduler restarted: the same losses as the undisturbed run",
              len(l_restart) == RESTART_STEPS and l_restart[:STEPS] == l_ref, (l_restart, l_ref))
        check("scheduler restarted: the workers re-registered and the lease was released",
              wait_for(lambda: cluster.alive_workers() == 4 and cluster.free_devices() == 4, 20),
              cluster.free_devices())

        # 2. and 3. A worker killed, then one stopped: the error names it, and how.
        for victim, sig, how in (("w1", signal.SIGKILL, "died"),
                                 ("w3", signal.SIGSTOP, "stopped answering")):
            p = start(500, "victim")
            head = read_until(p, 2)
            running = p.poll() is None and "[Step 2/" in head
            time.sleep(0.2)  # inside a later step
            cluster.workers[victim].send_signal(sig)
            t0 = time.time()
            try:
                rest, _ = p.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                rest, _ = p.communicate()
            took = time.time() - t0
            errors = [line for line in rest.splitlines() if "[error]" in line or "Error" in line]
            named = [line for line in errors if f"worker '{victim}'" in line and how in line]
            others = [line for line in errors
                      if re.search(r"worker 'w\d'", line) and f"worker '{victim}'" not in line]
            check(f"{victim} ({sig.name}): the job was running", running, head[-1500:])
            check(f"{victim} ({sig.name}): the client exits non-zero within 5 s ({took:.2f} s)",
                  p.returncode not in (0, None) and took <= 5.0, (p.returncode, took))
            check(f"{victim} ({sig.name}): the error names {victim} and says it {how}",
                  bool(named) and not others, "\n".join(errors[-6:]) or rest[-2000:])
            # Bring the node back for the next scenario.
            w = cluster.workers[victim]
            w.send_signal(signal.SIGCONT)
            w.kill()
            w.wait()
            before = cluster.registrations(victim)
            cluster.start_worker(victim)
            check(f"{victim} ({sig.name}): the restarted worker registers, the cluster is whole",
                  wait_for(lambda: cluster.registrations(victim) > before and
                           cluster.alive_workers() == 4 and cluster.free_devices() == 4, 40),
                  cluster.free_devices())
        check("the scheduler survived all of it", cluster.sched.poll() is None)
    finally:
        cluster.stop()
    print(f"{len(FAIL)} failed" if FAIL else "all passed")
    sys.exit(1 if FAIL else 0)


if __name__ == "__main__":
    main()
