"""Causal language models in transformers' words, one class per family the runtime has.

``AutoModelForCausalLM.from_pretrained(dir)`` reads a directory transformers wrote (config.json,
model.safetensors or shards; a directory without weights gives a model initialised from
``seed``) and returns the family's class; ``model(input_ids, attention_mask=..., labels=...)``
returns an output with ``.loss`` (and ``.logits`` where they exist: on one device; on a cluster
the loss comes back computed and the logits stay on the workers); ``save_pretrained(dir)`` writes
a checkpoint transformers loads.
"""
import json as _json
import os as _os

from . import _C
from ._tensor import as_array as _as_array


class CausalLMOutput:
    """``loss`` (a moreh.Tensor, when labels were given) and ``logits`` (or None). Indexable as
    transformers' outputs: ``outputs[0]`` is the loss."""

    __slots__ = ("loss", "logits")

    def __init__(self, loss, logits):
        self.loss = loss
        self.logits = logits

    def __getitem__(self, i):
        return tuple(v for v in (self.loss, self.logits) if v is not None)[i]

    def __repr__(self):
        return f"CausalLMOutput(loss={self.loss!r}, logits={self.logits!r})"


def _model_type(path):
    config = _os.path.join(path, "config.json")
    try:
        with open(config) as f:
            return _json.load(f).get("model_type", "llama")
    except FileNotFoundError:
        raise FileNotFoundError(f"{config}: no such file (from_pretrained needs a directory with "
                                "a config.json)") from None
    except ValueError as e:
        raise ValueError(f"{config}: not JSON: {e}") from None


class PreTrainedModel:
    """What every family shares. Not constructed directly: use ``from_pretrained``."""

    model_types = ()  # config.json model_type values this class loads

    def __init__(self, impl):
        self._impl = impl
        self.training = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, seed=0, **kwargs):
        """Loads a directory transformers wrote. ``seed`` initialises a model without weights.
        transformers' loading options (torch_dtype, device_map, ...) are accepted and ignored:
        the runtime keeps f32 master weights and places them itself."""
        path = _os.fspath(pretrained_model_name_or_path)
        model_type = _model_type(path)
        if cls.model_types and model_type not in cls.model_types:
            raise ValueError(f"{path}: model_type '{model_type}' is not a {cls.__name__} "
                             f"({', '.join(cls.model_types)}); use AutoModelForCausalLM or "
                             f"{_FAMILIES.get(model_type, PreTrainedModel).__name__}")
        return cls(_C.CausalLM.from_pretrained(path, int(seed)))

    def __call__(self, input_ids, attention_mask=None, labels=None, **kwargs):
        return self.forward(input_ids, attention_mask=attention_mask, labels=labels, **kwargs)

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        """input_ids [batch, sequence] (int64 or int32; numpy, torch CPU tensor or list),
        attention_mask (1 keep, 0 padding) and labels (-100 ignored) of the same shape.
        num_items_in_batch (gradient accumulation, as transformers): the token losses are
        summed and divided by it instead of by this batch's own count. Under moreh.no_grad()
        the forward alone runs (evaluation)."""
        num_items = kwargs.pop("num_items_in_batch", None)
        unknown = set(kwargs) - {"return_dict", "use_cache", "output_attentions",
                                 "output_hidden_states"}
        if unknown:
            raise TypeError(f"{type(self).__name__}.forward: unexpected argument(s) "
                            f"{', '.join(sorted(unknown))}")
        ids = _as_array(input_ids, "input_ids", ("int64", "int32"))
        if ids.ndim != 2:
            raise ValueError(f"input_ids: shape {tuple(ids.shape)}; expected [batch, sequence]")
        mask = None if attention_mask is None else _as_array(attention_mask, "attention_mask")
        lab = None if labels is None else _as_array(labels, "labels", ("int64", "int32"))
        for name, a in (("attention_mask", mask), ("labels", lab)):
            if a is not None and a.shape != ids.shape:
                raise ValueError(f"{name}: shape {tuple(a.shape)} differs from input_ids' "
                                 f"{tuple(ids.shape)}")
        if num_items is not None:  # transformers' gradient-accumulation argument
            num_items = float(num_items.item() if hasattr(num_items, "item") else num_items)
            if not num_items > 0:
                raise ValueError(f"num_items_in_batch: {num_items}; expected a token count > 0")
        loss, logits = self._impl.forward(ids, mask, lab, num_items or 0.0)
        return CausalLMOutput(loss, logits)

    def parameters(self):
        """The parameters (on a cluster: one handle standing for all of them, which the
        optimizer recognises)."""
        return self._impl.parameters()

    def named_parameters(self):
        return iter(self._impl.named_parameters())

    def zero_grad(self, set_to_none=True):
        """Drops the gradients (set_to_none=False zeroes them, with the same effect on the next
        backward)."""
        self._impl.zero_grad()

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    def cuda(self, device=None):
        """Harmless: the runtime places the model on its devices itself."""
        return self

    def cpu(self):
        return self

    def to(self, *args, **kwargs):
        """Harmless for devices and dtypes: the runtime keeps f32 master weights and chooses the
        compute dtype (MOREH_COMPUTE_DTYPE) and devices itself."""
        return self

    def save_pretrained(self, save_directory, max_shard_size=5_000_000_000, **kwargs):
        """Writes config.json and safetensors (sharded above max_shard_size bytes) atomically."""
        if isinstance(max_shard_size, str):
            max_shard_size = _parse_size(max_shard_size)
        self._impl.save_pretrained(_os.fspath(save_directory), int(max_shard_size))

    @property
    def config(self):
        """The model's configuration (config.json's fields), as a dict."""
        return _json.loads(self._impl.config_json)

    def num_parameters(self):
        return self._impl.num_parameters

    @property
    def is_distributed(self):
        """Whether the parameters live on worker daemons (advanced parallelization or a
        cluster)."""
        return self._impl.distributed

    def __repr__(self):
        c = self.config
        return (f"{type(self).__name__}(layers={c.get('num_hidden_layers')}, "
                f"hidden={c.get('hidden_size')}, parameters={self.num_parameters():,})")


def _parse_size(s):
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}
    t = s.strip().upper()
    for u in sorted(units, key=len, reverse=True):
        if t.endswith(u):
            return int(float(t[: -len(u)]) * units[u])
    return int(t)


class LlamaForCausalLM(PreTrainedModel):
    """Llama 2, Llama 3 / 3.1 / 3.2 / 3.3 (rope scaling, tied embeddings, biases)."""
    model_types = ("llama",)


class MistralForCausalLM(PreTrainedModel):
    """Mistral (sliding-window attention)."""
    model_types = ("mistral",)


class Qwen2ForCausalLM(PreTrainedModel):
    """Qwen2 / Qwen2.5 (q, k, v biases)."""
    model_types = ("qwen2",)


class Qwen3ForCausalLM(PreTrainedModel):
    """Qwen3 (RMSNorm on q and k per head)."""
    model_types = ("qwen3",)


class Gemma2ForCausalLM(PreTrainedModel):
    """Gemma 2 (GELU-tanh MLP, soft-capping, alternating sliding windows)."""
    model_types = ("gemma2",)


_FAMILIES = {t: c for c in (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
                            Qwen3ForCausalLM, Gemma2ForCausalLM) for t in c.model_types}


class AutoModelForCausalLM:
    """Picks the family's class from config.json's model_type."""

    def __init__(self):
        raise TypeError("AutoModelForCausalLM is not constructed: use "
                        "AutoModelForCausalLM.from_pretrained(path)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, seed=0, **kwargs):
        """Loads a directory transformers wrote as its family's class (LlamaForCausalLM,
        MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma2ForCausalLM), chosen by
        config.json's model_type. ``seed`` initialises a model without weights."""
        path = _os.fspath(pretrained_model_name_or_path)
        model_type = _model_type(path)
        family = _FAMILIES.get(model_type)
        if family is None:
            raise ValueError(f"{path}: model_type '{model_type}' is not supported (supported: "
                             f"{', '.join(sorted(_FAMILIES))})")
        return family.from_pretrained(path, seed=seed, **kwargs)


__all__ = ["AutoModelForCausalLM", "CausalLMOutput", "PreTrainedModel", "LlamaForCausalLM",
           "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "Gemma2ForCausalLM"]
