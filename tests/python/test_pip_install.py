"""`pip install .` into a fresh virtual environment, as a user installs the package: the build
goes through pyproject.toml (scikit-build-core drives the project's CMake; ccache serves what
./scripts/build compiled), and the installed package, run from outside the repository, trains a
model on one device and, with advanced parallelization, on a local cluster of the daemons it
ships in moreh/bin."""
import os
import subprocess
import sys
import textwrap

import pytest


def test_pip_install_in_a_fresh_venv(source, build_dir, tmp_path):
    venv = tmp_path / "venv"
    # Debian's numpy (and pybind11) are what the package builds and runs against.
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    r = subprocess.run(pip + ["install", "-q", "scikit-build-core==0.10.7"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(pip + ["install", "--no-build-isolation",
                              f"--config-settings=build-dir={build_dir}/pip-build", source],
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    code = textwrap.dedent(f"""
        import os, numpy as np, moreh
        from moreh.models import AutoModelForCausalLM
        pkg = os.path.dirname(moreh.__file__)
        assert pkg.startswith({str(venv)!r}), pkg
        assert os.access(os.path.join(pkg, "bin", "moreh-worker"), os.X_OK)
        if os.environ.get("AP") == "1":
            moreh.option.enable_advanced_parallelization()
        m = AutoModelForCausalLM.from_pretrained({os.path.join(source, "examples/llama-mini")!r})
        opt = moreh.optim.AdamW(m.parameters(), lr=1e-3)
        ids = np.random.RandomState(0).randint(1, 4096, size=(4, 32))
        losses = []
        for _ in range(3):
            out = m(ids, labels=ids)
            out.loss.backward()
            opt.step()
            m.zero_grad()
            losses.append(out.loss.item())
        assert losses[-1] < losses[0], losses
        print("distributed", m.is_distributed, "losses", losses)
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOREH_") and
           k != "PYTHONPATH"}
    for ap in ("0", "1"):
        e = dict(env, AP=ap, MOREH_HOME=str(tmp_path / "home"))
        if ap == "1":  # an embedded local cluster of the package's own daemons
            e.update(MOREH_DEVICE_SIZE="Medium", MOREH_LOCAL_DEVICE_MEMORY="512M")
        r = subprocess.run([str(venv / "bin" / "python"), "-c", code], cwd=str(tmp_path),
                           env=e, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert f"distributed {ap == '1'}" in r.stdout, r.stdout[-2000:]
