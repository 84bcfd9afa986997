#!/usr/bin/env python3
"""The daemons on a GPU: a scheduler and `moreh-worker --devices cuda:all` as real processes on
127.0.0.1, and `moreh-run train` (examples/llama-ap, advanced parallelization on) as their client.

Checks: the worker registers its GPUs (moreh-smi names them); the job runs on them in mixed
precision (bf16 weight copies, activations and gradients; f32 master weights and AdamW) and its
losses follow the f32 one-device run on the CPU (in process, no cluster) within bf16 accuracy; the
checkpoint it writes (the f32 master weights, read back from the GPU) follows the CPU one; and the
daemons are still up afterwards. Exit 0 pass, 1 fail, 77 no GPU (skipped, not a pass).

usage: check_daemons_gpu.py --bin DIR --source DIR
                            [--cpu-dry-run | --emulated WORKER [--emulated-devices N]]
(--cpu-dry-run: the same checks with a CPU device computing in bf16, to test this script where
there is no GPU. --emulated WORKER: the same checks with WORKER, a moreh-worker built against the
SIMT emulator (tests/cuda/simt), as the GPU worker: the CUDA kernels, the device allocator and the
start-up profile run in it, on the CPU; with N devices (the emulated NCCL between them), no
start-up profile; 6 steps instead of 10.) With four GPUs or more, two given configurations run
too: pipeline stages over NCCL links with sharded master weights, and tensor parallelism with data
parallelism.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from training_checks import (FAIL, MIXED_LOSS_TOLERANCE, MIXED_WEIGHT_TOLERANCE,  # noqa: E402
                             check, losses, read_checkpoint)

EMULATED_NAME = "SIMT emulator on the CPU (not a GPU)"  # tests/cuda/simt/simt_device.cc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--cpu-dry-run", action="store_true")
    ap.add_argument("--emulated", metavar="WORKER")
    ap.add_argument("--emulated-devices", type=int, default=1)
    a = ap.parse_args()
    real_gpu = not a.cpu_dry_run and not a.emulated
    if real_gpu and (shutil.which("nvidia-smi") is None or subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True).returncode != 0):
        print("check_daemons_gpu: no NVIDIA GPU on this machine: skipped")
        return 77
    tmp = tempfile.mkdtemp(prefix="moreh-gpu-daemons-")
    model, block, batch, steps = os.path.join(a.source, "examples/llama-ap"), "128", "8", 10
    if a.emulated:  # the emulator runs a kernel's threads one by one: a smaller Llama, head size 64
        model, block, batch, steps = os.path.join(tmp, "llama-small"), "32", "4", 6
        shutil.copytree(os.path.join(a.source, "examples/llama-ap"), model)
        with open(os.path.join(model, "config.json")) as f:
            config = json.load(f)
        config.update(hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2)
        with open(os.path.join(model, "config.json"), "w") as f:
            json.dump(config, f, indent=2)
    run = os.path.join(a.bin, "moreh-run")
    train = [run, "train", "--model-name-or-path", model,
             "--dataset", os.path.join(a.source, "examples/data/man_summaries.jsonl"),
             "--block-size", block, "--batch-size", batch, "--lr", "1e-3", "--log-interval", "2",
             "--max-steps", str(steps)]
    env = dict(os.environ, MOREH_HOME=os.path.join(tmp, "home"))
    for k in ("MOREH_SCHEDULER", "MOREH_DEVICE", "MOREH_COMPUTE_DTYPE",
              "MOREH_ADVANCED_PARALLELIZATION_CONFIG"):
        env.pop(k, None)
    os.makedirs(env["MOREH_HOME"])
    devices = "cuda:all"
    worker_flags = []
    if a.cpu_dry_run:
        n_gpus, devices = 1, "cpu:1:2G"
        env["MOREH_COMPUTE_DTYPE"] = "bf16"
    elif a.emulated:
        n_gpus = a.emulated_devices
        env["MOREH_SIMT_DEVICES"] = str(n_gpus)
        if n_gpus > 1:  # its NCCL bus bandwidth over sockets takes a minute (simt.NcclBusBandwidth)
            worker_flags = ["--no-profile"]
    else:
        n_gpus = len(subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                    text=True).stdout.strip().splitlines())
    # The virtual device: the most of the node's GPUs that a size names.
    size = next(name for count, name in ((8, "xLarge"), (4, "Large"), (2, "Medium"), (1, "Small"))
                if count <= max(n_gpus, 1))
    key = os.path.join(tmp, "key")
    with open(key, "w") as f:
        f.write("gpu-check-cluster-key-0123456789abcdef")
    os.chmod(key, 0o600)
    port_file = os.path.join(tmp, "port")
    logs = {n: open(os.path.join(tmp, n + ".log"), "w") for n in ("scheduler", "worker")}
    daemons = [subprocess.Popen([os.path.join(a.bin, "moreh-scheduler"), "--key-file", key,
                                 "--port-file", port_file], stdout=logs["scheduler"],
                                stderr=subprocess.STDOUT)]
    try:
        for _ in range(200):
            if os.path.exists(port_file) and open(port_file).read().strip():
                break
            time.sleep(0.05)
        sched = "127.0.0.1:" + open(port_file).read().strip()
        daemons.append(subprocess.Popen(
            [a.emulated or os.path.join(a.bin, "moreh-worker"), "--scheduler", sched,
             "--devices", devices, "--node", "gpu0", "--key-file", key] + worker_flags, env=env,
            stdout=logs["worker"], stderr=subprocess.STDOUT))
        smi = ""
        for _ in range(300):  # the worker measures its GPUs before it registers
            smi = subprocess.run([os.path.join(a.bin, "moreh-smi"), "--cluster",
                                  "--scheduler", sched], env=env, capture_output=True,
                                 text=True, timeout=30).stdout
            if "free devices: " in smi and "free devices: 0" not in smi:
                break
            if daemons[1].poll() is not None:
                break  # the worker's log (printed below) says why
            time.sleep(0.2)
        print(smi)
        gpu_names = "cpu" if a.cpu_dry_run else EMULATED_NAME if a.emulated else subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True).stdout.split("\n")[0].strip()
        check(f"the worker registers its GPUs (moreh-smi names '{gpu_names}')",
              gpu_names != "" and gpu_names in smi, smi)
        if FAIL:
            raise SystemExit(1)  # no GPU to run the job on (the finally prints the logs)

        out_cpu = os.path.join(tmp, "cpu")
        c = subprocess.run(train + ["--save-model-dir", out_cpu],
                           env=dict(env, MOREH_HOME=os.path.join(tmp, "nohome"),
                                    MOREH_DEVICE_SIZE="", MOREH_COMPUTE_DTYPE="f32",
                                    MOREH_ENABLE_ADVANCED_PARALLELIZATION="0"),
                           capture_output=True, text=True, timeout=300)
        check("the one-device f32 run on the CPU: exit code 0", c.returncode == 0,
              c.stderr[-2000:])
        l_cpu = losses(c.stdout + c.stderr)
        print("losses (CPU, f32):", l_cpu)
        w_cpu = read_checkpoint(out_cpu) if os.path.isdir(out_cpu) else {}

        # The planner's choice; with four GPUs or more also given configurations: pipeline stages
        # joined by NCCL links with the replicas' master weights sharded (reduce-scatter and
        # all-gather), and tensor parallelism (all-reduce) with data parallelism.
        jobs = [("the planner's configuration", None)]
        if n_gpus >= 4:
            jobs += [("2 stages x 2 replicas, master weights sharded",
                      '{"num_stages": 2, "num_micro_batches": 2, "distribute_param": true}'),
                     ("TP 2 x 2 replicas", '{"num_stages": 1, "tp": 2, "num_micro_batches": 2}')]
        for n, (name, config) in enumerate(jobs):
            out_gpu = os.path.join(tmp, f"gpu{n}")
            job_env = dict(env, MOREH_SCHEDULER=sched, MOREH_DEVICE_SIZE=size,
                           MOREH_ENABLE_ADVANCED_PARALLELIZATION="1")
            if config:
                job_env["MOREH_ADVANCED_PARALLELIZATION_CONFIG"] = config
            t0 = time.time()
            g = subprocess.run(train + ["--save-model-dir", out_gpu], env=job_env,
                               capture_output=True, text=True, timeout=300)
            glog = g.stdout + g.stderr
            print(glog[-2500:])
            check(f"{name}: the job on the GPU worker: exit code 0 ({time.time() - t0:.1f} s)",
                  g.returncode == 0, glog[-2000:])
            check(f"{name}: it computes in mixed precision (bf16 on GPUs by default)",
                  "Mixed precision: bf16" in glog, glog[-1500:])
            l_gpu = losses(glog)
            worst = max((abs(x - y) / abs(y) for x, y in zip(l_gpu, l_cpu)), default=1.0)
            print("losses (GPU, bf16):", l_gpu)
            check(f"{name}: the GPU's losses follow the CPU's within bf16 accuracy (worst rel. "
                  f"{worst:.2e})",
                  len(l_gpu) == len(l_cpu) == steps // 2 and 0 < worst <= MIXED_LOSS_TOLERANCE,
                  (l_gpu, l_cpu))
            w_gpu = read_checkpoint(out_gpu) if os.path.isdir(out_gpu) else {}
            if w_gpu is None:  # on the GPU machine a comparison not made is a failure
                check("safetensors is installed, so the checkpoints are compared", a.cpu_dry_run)
                continue
            same = sorted(w_gpu) == sorted(w_cpu) and len(w_cpu) > 0
            diff = sum(float(((w_gpu[k].astype("float64") - w_cpu[k]) ** 2).sum())
                       for k in w_cpu) if same else 1.0
            norm = sum(float((w_cpu[k].astype("float64") ** 2).sum()) for k in w_cpu) or 1.0
            rel = (diff / norm) ** 0.5
            check(f"{name}: the checkpoint (f32 master weights) follows the CPU's "
                  f"(rel. {rel:.2e})", same and rel <= MIXED_WEIGHT_TOLERANCE,
                  sorted(set(w_gpu) ^ set(w_cpu)))
        if len(jobs) > 1:  # the given configurations' groups and links were NCCL's
            with open(os.path.join(tmp, "worker.log")) as f:
                wlog = f.read()
            for use in ("NCCL for data parallelism (2 ranks)", "the pipeline links",
                        "tensor parallelism (2 ranks)"):
                check(f"the worker's log says '{use}'", use in wlog, wlog[-1500:])
        check("the scheduler and the worker are still running",
              all(d.poll() is None for d in daemons))
    finally:
        for d in daemons:
            d.terminate()
        for d in daemons:
            try:
                d.wait(timeout=10)
            except subprocess.TimeoutExpired:
                d.kill()
        for f in logs.values():
            f.close()
        for n in logs:
            with open(os.path.join(tmp, n + ".log")) as f:
                text = f.read()
            if FAIL:
                print(f"--- {n} log (last 3000 characters)\n{text[-3000:]}")
        shutil.rmtree(tmp, ignore_errors=True)
    print("all checks passed" if not FAIL else f"{len(FAIL)} check(s) failed")
    return 1 if FAIL else 0


if __name__ == "__main__":
    sys.exit(main())
