"""examples/text_summarization_for_ap.py, the reference script in Python, against the C++ program
(`moreh-run train`, which runs examples/text_summarization_for_ap.cpp) on the shipped data: the
same losses bit for bit (as f32) with advanced parallelization off (one device) and on (a local
cluster of 4 x 256 MiB worker daemons); with it off on those devices the reference's
out-of-memory message; a Ctrl-C mid-job stops it cleanly (the lease is released: the devices
train the next job; the daemons stay up)."""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

FLAGS = ["--batch-size", "8", "--block-size", "128", "--lr", "1e-3", "--no-shuffle",
         "--log-interval", "1"]


def losses(text):
    return [(int(s), np.float32(v)) for s, v in
            re.findall(r"\[Step (\d+)/\d+\] Loss: ([-+0-9.eE]+|nan|inf)", text)]


@pytest.fixture(scope="module")
def paths(source, build_dir):
    return {"run": os.path.join(build_dir, "bin", "moreh-run"),
            "script": os.path.join(source, "examples", "text_summarization_for_ap.py"),
            "model": os.path.join(source, "examples", "llama-ap"),
            "data": os.path.join(source, "examples", "data", "man_summaries.jsonl"),
            "pythonpath": os.path.join(build_dir, "python")}


@pytest.fixture(scope="module")
def cluster(paths):
    home = tempfile.mkdtemp(prefix="moreh-python-home-")
    env = dict(os.environ, MOREH_HOME=home, MOREH_DEVICE_SIZE="Large",
               PYTHONPATH=paths["pythonpath"])
    for k in ("MOREH_SCHEDULER", "MOREH_ENABLE_ADVANCED_PARALLELIZATION",
              "MOREH_ADVANCED_PARALLELIZATION_CONFIG", "MOREH_COMPUTE_DTYPE"):
        env.pop(k, None)
    up = subprocess.run([paths["run"], "cluster", "up", "--workers", "4", "--device-memory",
                         "256M"], env=env, capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    yield env
    subprocess.run([paths["run"], "cluster", "down"], env=env, capture_output=True, timeout=60)


def both(paths, env, steps, out):
    common = ["--model-name-or-path", paths["model"], "--dataset", paths["data"],
              "--max-steps", str(steps)] + FLAGS
    cpp = subprocess.run([paths["run"], "train"] + common + ["--save-model-dir", out + "-cpp"],
                         env=env, capture_output=True, text=True, timeout=600)
    py = subprocess.run([sys.executable, paths["script"]] + common +
                        ["--save-model-dir", out + "-py"],
                        env=env, capture_output=True, text=True, timeout=600)
    return cpp, py


def test_ap_off_on_one_device_equals_the_cpp_program(paths, tmp_path):
    env = dict(os.environ, MOREH_HOME=str(tmp_path / "home"), PYTHONPATH=paths["pythonpath"],
               MOREH_ENABLE_ADVANCED_PARALLELIZATION="0")
    env.pop("MOREH_SCHEDULER", None)
    cpp, py = both(paths, env, 4, str(tmp_path / "out"))
    assert cpp.returncode == 0, cpp.stderr[-3000:]
    assert py.returncode == 0, py.stderr[-3000:]
    a, b = losses(cpp.stdout + cpp.stderr), losses(py.stdout + py.stderr)
    assert len(a) == 4 and a == b, (a, b)
    assert "Training Done" in py.stdout and "Model saved in" in py.stdout
    assert os.path.isfile(tmp_path / "out-py" / "model.safetensors")


def test_ap_on_a_local_cluster_equals_the_cpp_program(paths, cluster, tmp_path):
    env = dict(cluster, MOREH_ENABLE_ADVANCED_PARALLELIZATION="1")
    cpp, py = both(paths, env, 6, str(tmp_path / "out"))
    assert cpp.returncode == 0, cpp.stderr[-3000:]
    assert py.returncode == 0, py.stderr[-3000:]
    a, b = losses(cpp.stdout + cpp.stderr), losses(py.stdout + py.stderr)
    assert len(a) == 6 and a == b, (a, b)
    # The planner's log lines, as the reference prints them, from the Python program too.
    assert "Configuration for parallelism is selected." in py.stdout + py.stderr


def test_ap_off_on_small_devices_stops_with_the_out_of_memory_message(paths, cluster, tmp_path):
    env = dict(cluster, MOREH_ENABLE_ADVANCED_PARALLELIZATION="0")
    py = subprocess.run([sys.executable, paths["script"], "--model-name-or-path", paths["model"],
                         "--dataset", paths["data"], "--max-steps", "2",
                         "--save-model-dir", str(tmp_path / "out")] + FLAGS,
                        env=env, capture_output=True, text=True, timeout=300)
    assert py.returncode == 1, py.stdout[-2000:] + py.stderr[-2000:]
    assert "RuntimeError: Error Code 4: OUT_OF_MEMORY" in py.stderr, py.stderr[-3000:]
    assert "Increase Device Size" in py.stderr


def test_ctrl_c_mid_job_releases_the_lease_and_keeps_the_daemons(paths, cluster, tmp_path):
    env = dict(cluster, MOREH_ENABLE_ADVANCED_PARALLELIZATION="1")
    p = subprocess.Popen([sys.executable, paths["script"], "--model-name-or-path", paths["model"],
                          "--dataset", paths["data"], "--max-steps", "500",
                          "--save-model-dir", str(tmp_path / "out")] + FLAGS,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = ""
    deadline = time.time() + 300
    while "[Step 2/" not in seen and time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        seen += line
    assert "[Step 2/" in seen, seen[-3000:]
    p.send_signal(signal.SIGINT)
    rest, _ = p.communicate(timeout=60)
    assert p.returncode != 0 and "KeyboardInterrupt" in rest, rest[-3000:]
    # The devices are free again and the daemons up: the next job trains on all four at once.
    t0 = time.time()
    nxt = subprocess.run([paths["run"], "train", "--model-name-or-path", paths["model"],
                          "--dataset", paths["data"], "--max-steps", "2",
                          "--save-model-dir", str(tmp_path / "next")] + FLAGS,
                         env=env, capture_output=True, text=True, timeout=300)
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    assert len(losses(nxt.stdout + nxt.stderr)) == 2
    assert time.time() - t0 < 120


def test_moreh_run_runs_a_python_program_against_the_cluster(paths, cluster, tmp_path):
    env = dict(cluster, MOREH_ENABLE_ADVANCED_PARALLELIZATION="1")
    common = ["--model-name-or-path", paths["model"], "--dataset", paths["data"],
              "--max-steps", "2"] + FLAGS
    r = subprocess.run([paths["run"], "--", sys.executable, paths["script"]] + common +
                       ["--save-model-dir", str(tmp_path / "out")],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cpp = subprocess.run([paths["run"], "train"] + common +
                         ["--save-model-dir", str(tmp_path / "cpp")],
                         env=env, capture_output=True, text=True, timeout=300)
    a, b = losses(cpp.stdout + cpp.stderr), losses(r.stdout + r.stderr)
    assert len(b) == 2 and a == b, (a, b)


def test_training_loop_flags_give_the_same_losses_in_both_programs(paths, tmp_path):
    """The schedule, accumulation, clipping and decay-group flags mean the same in both."""
    env = dict(os.environ, MOREH_HOME=str(tmp_path / "home"), PYTHONPATH=paths["pythonpath"],
               MOREH_ENABLE_ADVANCED_PARALLELIZATION="0")
    env.pop("MOREH_SCHEDULER", None)
    common = ["--model-name-or-path", paths["model"], "--dataset", paths["data"],
              "--max-steps", "4", "--lr-scheduler-type", "linear", "--warmup-steps", "1",
              "--gradient-accumulation-steps", "2", "--max-grad-norm", "0.5",
              "--weight-decay", "0.1", "--exclude-bias-and-norm-from-decay"] + FLAGS
    runs = {}
    for name, cmd in (("cpp", [paths["run"], "train"]), ("py", [sys.executable, paths["script"]])):
        r = subprocess.run(cmd + common + ["--save-model-dir", str(tmp_path / name)], env=env,
                           capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = losses(r.stdout + r.stderr)
    assert len(runs["cpp"]) == 4 and runs["cpp"] == runs["py"], runs
