"""The moreh package's API as a PyTorch / transformers user calls it, in process (one device):
loading every family, forward with .loss and .logits, backward / step / zero_grad, training that
matches the C++ frontend's, save and load, numpy / torch / DLPack interop without copies, and
every error path as a Python exception that names the argument and the shapes."""
import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import moreh
from moreh.models import (AutoModelForCausalLM, Gemma2ForCausalLM, LlamaForCausalLM,
                          MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM)

FAMILIES = {"llama3": LlamaForCausalLM, "mistral": MistralForCausalLM, "qwen2": Qwen2ForCausalLM,
            "qwen3": Qwen3ForCausalLM, "gemma2": Gemma2ForCausalLM}


def batch(vocab, b=2, t=16, seed=0):
    ids = np.random.RandomState(seed).randint(1, vocab, size=(b, t)).astype(np.int64)
    return ids


@pytest.fixture(scope="module")
def mini(source):
    return os.path.join(source, "examples/llama-mini")


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_loads_as_its_class_and_computes_a_loss(source, family):
    path = os.path.join(source, "examples/families", family)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert type(model) is FAMILIES[family]
    vocab = model.config["vocab_size"]
    ids = batch(vocab)
    out = model(ids, labels=ids)
    assert out.loss.shape == () and out.loss.dtype == "f32"
    loss = out.loss.item()
    # Near-uniform predictions at initialisation: about log(vocab).
    assert abs(loss - np.log(vocab)) < 1.0, (family, loss)
    assert out.logits.shape == (2, 16, vocab)
    assert out[0] is out.loss


def test_a_family_class_refuses_another_family(source):
    with pytest.raises(ValueError, match="model_type 'qwen2' is not a LlamaForCausalLM.*"
                                         "Qwen2ForCausalLM"):
        LlamaForCausalLM.from_pretrained(os.path.join(source, "examples/families/qwen2"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        AutoModelForCausalLM.from_pretrained(os.path.join(source, "no-such-model"))


def test_unsupported_model_type_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_a_bad_config_is_a_moreh_error_naming_the_field(tmp_path, mini):
    with open(os.path.join(mini, "config.json")) as f:
        c = json.load(f)
    c["num_attention_heads"] = 7  # does not divide hidden_size 256
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(moreh.Error, match="num_attention_heads"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_training_steps_match_the_cpp_frontends_semantics(mini):
    """Loss falls; reading the loss before backward() changes nothing (the graph is kept)."""
    def train(read_first):
        model = AutoModelForCausalLM.from_pretrained(mini, seed=3)
        optim = moreh.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        ids = batch(4096)
        losses = []
        for _ in range(4):
            out = model(ids, labels=ids)
            if read_first:
                losses.append(out.loss.item())
            out.loss.backward()
            optim.step()
            model.zero_grad(set_to_none=True)
            if not read_first:
                losses.append(out.loss.item())
        return losses
    after, before = train(False), train(True)
    assert after == before
    assert after[-1] < after[0] - 0.5


def test_inputs_from_numpy_torch_and_lists_give_the_same_loss(mini):
    model = AutoModelForCausalLM.from_pretrained(mini)
    ids = batch(4096)
    mask = np.ones_like(ids)
    mask[1, -3:] = 0
    labels = np.where(mask == 1, ids, -100)
    ref = model(ids, attention_mask=mask, labels=labels).loss.item()
    for conv in (torch.from_numpy, lambda a: a.tolist(), lambda a: a.astype(np.int32),
                 lambda a: torch.from_numpy(a).int()):
        m = mask.astype(bool) if conv is torch.from_numpy else mask
        assert model(conv(ids), attention_mask=conv(m) if conv is not torch.from_numpy
                     else torch.from_numpy(m), labels=conv(labels)).loss.item() == ref


def test_input_errors_name_the_argument_and_shapes(mini):
    model = AutoModelForCausalLM.from_pretrained(mini)
    ids = batch(4096)
    with pytest.raises(TypeError, match="input_ids: dtype float32"):
        model(ids.astype(np.float32))
    with pytest.raises(ValueError, match=r"input_ids: shape \(32,\)"):
        model(ids.reshape(-1))
    with pytest.raises(ValueError, match=r"labels: shape \(2, 3\) differs from input_ids' "
                                         r"\(2, 16\)"):
        model(ids, labels=ids[:, :3])
    with pytest.raises(TypeError, match="unexpected argument.*return_lotits"):
        model(ids, return_lotits=True)
    outside = np.full((1, 8), 5000, dtype=np.int64)  # past the vocabulary (4096)
    with pytest.raises(moreh.Error, match="5000"):
        model(outside, labels=outside).loss.item()
    with pytest.raises(ValueError, match="invalid lr"):
        moreh.optim.AdamW(model.parameters(), lr=-1)
    with pytest.raises(ValueError, match="empty parameter list"):
        moreh.optim.AdamW([], lr=1e-3)
    with pytest.raises(ValueError, match="max_stages"):
        moreh.option.enable_advanced_parallelization(max_stages=-2)


def test_outputs_are_views_not_copies(mini):
    model = AutoModelForCausalLM.from_pretrained(mini)
    ids = batch(4096)
    logits = model(ids).logits
    a, b = logits.numpy(), np.asarray(logits)
    assert np.shares_memory(a, b), "numpy() must view the runtime's buffer"
    t = torch.from_dlpack(logits)
    assert t.shape == (2, 16, 4096) and t.dtype == torch.float32
    assert t.data_ptr() == a.__array_interface__["data"][0]
    # The view outlives the model and the output handle.
    del model, logits
    assert np.isfinite(a).all() and float(t.sum()) == pytest.approx(float(a.sum()), rel=1e-6)


def test_moreh_tensors_round_trip():
    x = moreh.tensor([[1.5, 2.0], [3.0, 4.25]])
    assert x.shape == (2, 2) and x.dtype == "f32"
    assert x.tolist() == [[1.5, 2.0], [3.0, 4.25]]
    assert moreh.tensor(np.arange(3)).dtype == "i64"
    with pytest.raises(TypeError, match="complex"):
        moreh.Tensor(np.zeros(2, dtype=np.complex64))


def test_module_methods_are_harmless_where_they_mean_nothing(mini, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(mini)
    assert model.cuda() is model and model.to("cuda") is model and model.to(torch.bfloat16) is model
    assert model.eval() is model and not model.training
    assert model.train() is model and model.training
    assert model.num_parameters() == 6450432
    assert not model.is_distributed


def test_save_pretrained_round_trips_and_transformers_loads_it(mini, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(mini, seed=5)
    optim = moreh.optim.AdamW(model.parameters(), lr=1e-3)
    ids = batch(4096)
    out = model(ids, labels=ids)
    out.loss.backward()
    optim.step()
    model.save_pretrained(tmp_path / "ckpt")
    after = model(ids, labels=ids).loss.item()
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    assert again(ids, labels=ids).loss.item() == after
    import transformers
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        ref = hf(torch.from_numpy(ids), labels=torch.from_numpy(ids)).loss.item()
    assert ref == pytest.approx(after, rel=1e-5)


def test_the_gil_is_released_while_a_step_runs(mini):
    model = AutoModelForCausalLM.from_pretrained(mini)
    optim = moreh.optim.AdamW(model.parameters(), lr=1e-4)
    ids = batch(4096, b=4, t=64)
    ticks = []
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    th = threading.Thread(target=tick)
    th.start()
    t0 = time.perf_counter()
    for _ in range(3):
        out = model(ids, labels=ids)
        out.loss.backward()
        optim.step()
        model.zero_grad()
    t1 = time.perf_counter()
    stop.set()
    th.join()
    inside = [t for t in ticks if t0 <= t <= t1]
    # With the GIL held through a step the thread could not run at all while it lasts.
    assert len(inside) > 0.2 * (t1 - t0) / 0.0011, (len(inside), t1 - t0)


def test_out_of_memory_is_moreh_out_of_memory_error_with_the_reference_message(source):
    code = ("import moreh, numpy as np\n"
            "from moreh.models import AutoModelForCausalLM\n"
            f"m = AutoModelForCausalLM.from_pretrained({os.path.join(source, 'examples/llama-mini')!r})\n"
            "ids = np.ones((8, 256), dtype=np.int64)\n"
            "try:\n"
            "    m(ids, labels=ids).loss.backward()\n"
            "    moreh.optim.AdamW(m.parameters(), lr=1e-3).step()\n"
            "except moreh.OutOfMemoryError as e:\n"
            "    assert isinstance(e, moreh.Error) and isinstance(e, RuntimeError)\n"
            "    print('OOM:', e)\n")
    env = dict(os.environ, MOREH_CPU_DEVICE_MEMORY="48M",
               PYTHONPATH=os.path.dirname(os.path.dirname(moreh.__file__)))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OOM: Error Code 4: OUT_OF_MEMORY" in r.stdout, r.stdout[-2000:]
    assert "Increase Device Size" in r.stdout and "Decrease Batch Size" in r.stdout


def test_help_explains_and_stubs_exist():
    import pydoc
    text = pydoc.render_doc(moreh.models.AutoModelForCausalLM.from_pretrained)
    assert "family" in text
    assert "enable_advanced_parallelization" in (moreh.__doc__ or "")
    pkg = os.path.dirname(moreh.__file__)
    assert os.path.isfile(os.path.join(pkg, "py.typed"))
    assert os.path.isfile(os.path.join(pkg, "_C.pyi"))


@pytest.mark.parametrize("name,warmup", [("constant", 0), ("constant_with_warmup", 5),
                                         ("linear", 0), ("linear", 5), ("cosine", 0),
                                         ("cosine", 5)])
def test_learning_rate_schedules_equal_transformers(mini, name, warmup):
    import transformers
    model = AutoModelForCausalLM.from_pretrained(mini)
    ours = moreh.optim.AdamW(model.parameters(), lr=3e-4)
    sched = moreh.optim.get_scheduler(name, ours, num_warmup_steps=warmup, num_training_steps=20)
    ref_opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    ref = transformers.get_scheduler(name, ref_opt, num_warmup_steps=warmup,
                                     num_training_steps=20)
    for step in range(24):
        assert sched.get_last_lr() == pytest.approx(ref.get_last_lr(), rel=1e-12, abs=1e-18), step
        ref_opt.step()
        ref.step()
        sched.step()
    with pytest.raises(ValueError, match="'polynomial'"):
        moreh.optim.get_scheduler("polynomial", ours, num_training_steps=20)
    with pytest.raises(ValueError, match="num_training_steps"):
        moreh.optim.get_scheduler("cosine", ours)


def test_the_schedule_reaches_the_optimizer(mini):
    """A zero learning rate (warmup's first step) leaves the weights as they were."""
    model = AutoModelForCausalLM.from_pretrained(mini)
    optim = moreh.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    sched = moreh.optim.get_scheduler("linear", optim, num_warmup_steps=2, num_training_steps=10)
    ids = batch(4096)
    losses = []
    for _ in range(3):
        out = model(ids, labels=ids)
        out.loss.backward()
        optim.step()
        sched.step()
        model.zero_grad()
        losses.append(out.loss.item())
    after = model(ids, labels=ids).loss.item()
    assert losses[0] == losses[1], "lr 0 on the first step must change nothing"
    assert losses[2] < losses[1] and after < losses[2]


def test_evaluation_under_no_grad(mini):
    model = AutoModelForCausalLM.from_pretrained(mini)
    ids = batch(4096)
    assert moreh.is_grad_enabled()
    with moreh.no_grad():
        assert not moreh.is_grad_enabled()
        out = model(ids, labels=ids)
        assert not out.loss.requires_grad
        first = out.loss.item()
    assert moreh.is_grad_enabled()

    @moreh.no_grad()
    def evaluate():
        return model(ids, labels=ids).loss.item()
    assert evaluate() == first
    assert model(ids, labels=ids).loss.requires_grad


@pytest.mark.parametrize("family", ["llama3", "qwen2", "gemma2"])
def test_transformers_autotokenizer_feeds_the_model(source, family):
    """What users already use: transformers.AutoTokenizer's ids and mask (torch tensors, padded)
    go straight into the model."""
    import transformers
    path = os.path.join(source, "examples/families", family)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    enc = tok(["[SUMMARIZE] ls lists a directory. [/SUMMARIZE]\nIt lists.", "short"],
              padding="max_length", max_length=24, truncation=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    model = AutoModelForCausalLM.from_pretrained(path)
    loss = model(enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss.item()
    assert np.isfinite(loss) and abs(loss - np.log(model.config["vocab_size"])) < 1.0


def _grads_step(model_dir, max_norm, num_items=None):
    """One accumulated step of two batches; the norm clip_grad_norm_ returns and the next loss."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, seed=5)
    optim = moreh.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1,
                              exclude_bias_and_norm=True)
    a, b = batch(4096, seed=1), batch(4096, seed=2)
    b[:, 10:] = 0  # fewer labels in the second batch: the token weighting matters
    lab_b = b.copy()
    lab_b[b == 0] = -100
    total = (a[:, 1:] != -100).sum() + (lab_b[:, 1:] != -100).sum()
    for ids, lab in ((a, a), (b, lab_b)):
        model(ids, labels=lab, num_items_in_batch=total).loss.backward()
    norm = moreh.optim.clip_grad_norm_(model.parameters(), max_norm)
    optim.step()
    model.zero_grad()
    return norm, model(a, labels=a).loss.item()


def test_accumulation_and_clipping_equal_torch(mini, tmp_path):
    """num_items_in_batch, clip_grad_norm_ and the decay exclusions against transformers."""
    from transformers import AutoModelForCausalLM as HF
    norm, after = _grads_step(mini, 0.5)
    model = AutoModelForCausalLM.from_pretrained(mini, seed=5)
    model.save_pretrained(str(tmp_path / "w"))
    ref = HF.from_pretrained(str(tmp_path / "w"), torch_dtype=torch.float32,
                             attn_implementation="eager")
    decay = [p for n, p in ref.named_parameters() if not moreh.optim.excluded_from_weight_decay(n)]
    rest = [p for n, p in ref.named_parameters() if moreh.optim.excluded_from_weight_decay(n)]
    assert len(rest) == 2 * ref.config.num_hidden_layers + 1  # the norms (no biases here)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": rest, "weight_decay": 0.0}], lr=1e-3)
    a, b = torch.from_numpy(batch(4096, seed=1)), torch.from_numpy(batch(4096, seed=2))
    b[:, 10:] = 0
    lab_b = b.clone()
    lab_b[b == 0] = -100
    total = int((a[:, 1:] != -100).sum() + (lab_b[:, 1:] != -100).sum())
    for ids, lab in ((a, a), (b, lab_b)):
        ref(input_ids=ids, labels=lab, num_items_in_batch=total, use_cache=False).loss.backward()
    grads = [p.grad for p in ref.parameters()]
    want = float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads)))
    assert abs(norm - want) / want < 1e-6, (norm, want)
    assert want > 0.5  # clipping was active
    for g in grads:
        g.mul_(0.5 / (want + 1e-6))
    opt.step()
    with torch.no_grad():
        want_after = ref(input_ids=a, labels=a, use_cache=False).loss.item()
    assert abs(after - want_after) / want_after < 1e-5, (after, want_after)


def test_accumulation_clipping_and_evaluation_on_a_cluster_equal_one_device(mini, monkeypatch):
    """The same step on 2 devices of an embedded local cluster; eval under no_grad there."""
    one = _grads_step(mini, 0.5)
    monkeypatch.setenv("MOREH_DEVICE_SIZE", "Medium")
    monkeypatch.setenv("MOREH_LOCAL_DEVICE_MEMORY", "512M")
    monkeypatch.setenv("MOREH_ADVANCED_PARALLELIZATION_CONFIG", '{"num_stages": 2}')
    moreh.option.enable_advanced_parallelization()
    try:
        two = _grads_step(mini, 0.5)
        model = AutoModelForCausalLM.from_pretrained(mini, seed=5)
        assert model._impl.distributed
        ids = batch(4096)
        loss = model(ids, labels=ids).loss.item()  # plans and sets the job up (a training step)
        with moreh.no_grad():
            first = model(ids, labels=ids).loss.item()
            again = model(ids, labels=ids).loss.item()
        assert first == again  # forward only: nothing changed the weights
        assert abs(first - loss) / loss < 1e-6  # the same weights as the training step's forward
    finally:
        moreh.option.disable_advanced_parallelization()
    assert abs(two[0] - one[0]) / one[0] < 1e-6, (one, two)
    assert abs(two[1] - one[1]) / one[1] < 1e-5, (one, two)


def test_clip_grad_norm_input_errors(mini):
    model = AutoModelForCausalLM.from_pretrained(mini)
    ids = batch(4096)
    with pytest.raises(ValueError, match="max_norm is NaN"):
        moreh.optim.clip_grad_norm_(model.parameters(), float("nan"))
    with pytest.raises(ValueError, match="num_items_in_batch"):
        model(ids, labels=ids, num_items_in_batch=0)
    model(ids, labels=ids).loss.backward()
    norm = moreh.optim.clip_grad_norm_(model.parameters(), float("inf"))  # the norm only
    assert norm > 0 and norm == moreh.optim.clip_grad_norm_(model.parameters(), 0)
