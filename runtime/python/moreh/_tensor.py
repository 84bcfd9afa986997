"""moreh.Tensor: the runtime's tensor, with numpy and DLPack interop.

A Tensor's values are computed lazily (the forward, backward and optimizer step run as one
cached graph); reading them (``item()``, ``numpy()``) runs what is pending. ``numpy()`` is a view
of the runtime's buffer, not a copy (16-bit floats, which numpy lacks, come as float32), and
``torch.from_dlpack(t)`` shares it too.
"""
import numpy as _np

from . import _C

Tensor = _C.Tensor


def _array(self, dtype=None, copy=None):
    a = self.numpy()
    return a if dtype is None else a.astype(dtype, copy=False)


def _dlpack(self, stream=None):
    if stream is not None:
        raise BufferError("moreh.Tensor.__dlpack__: host memory takes no stream")
    return self.numpy().__dlpack__()


Tensor.__array__ = _array
Tensor.__dlpack__ = _dlpack
Tensor.__dlpack_device__ = lambda self: (1, 0)  # kDLCPU
Tensor.tolist = lambda self: self.numpy().tolist()
Tensor.size = lambda self, dim=None: self.shape if dim is None else self.shape[dim]


def as_array(x, name, dtypes=("int64",)):
    """x (a moreh.Tensor, numpy array, torch CPU tensor or nested list) as a C-contiguous numpy
    array of the first of ``dtypes`` it can take; TypeError/ValueError name ``name``."""
    if isinstance(x, Tensor):
        a = x.numpy()
    elif hasattr(x, "detach") and hasattr(x, "numpy"):  # a torch tensor
        if getattr(x, "device", None) is not None and x.device.type != "cpu":
            raise ValueError(f"{name}: a tensor on {x.device}; pass CPU tensors (the runtime "
                             "places the data on its devices itself)")
        a = x.detach().numpy()
    else:
        a = _np.asarray(x)
    want = _np.dtype(dtypes[0])
    if a.dtype.kind == "b" or (a.dtype.kind in "iu" and want.kind == "i"):
        a = a.astype(want, copy=False)
    elif a.dtype.kind == "f" and want.kind == "f":
        a = a.astype(want, copy=False)
    elif a.dtype != want:
        raise TypeError(f"{name}: dtype {a.dtype} where {' or '.join(dtypes)} is expected")
    return _np.ascontiguousarray(a)


def tensor(data, requires_grad=False):
    """A moreh.Tensor holding a copy of ``data`` (numpy array, torch CPU tensor or list):
    float32, int64 or int32."""
    a = _np.asarray(data.detach().numpy() if hasattr(data, "detach") else data)
    if a.dtype.kind == "f":
        a = a.astype(_np.float32, copy=False)
    elif a.dtype.kind in "iub":
        a = a.astype(_np.int32 if a.dtype == _np.int32 else _np.int64, copy=False)
    return Tensor(_np.ascontiguousarray(a), requires_grad)
