"""Reading a Hugging Face folder's weights into numpy without running anything from the files:
model.safetensors (one file, or shards named by model.safetensors.index.json) parsed by hand (an
8-byte header length, a JSON header, raw little-endian bytes; bfloat16 widened to float32), and
pytorch_model.bin (PyTorch's zip format) through torch.load(weights_only=True) when torch is there,
else an unpickler that builds only tensors from their storages and refuses every other class.

Usage: ``tensors = read_weights("gpt2/")``  ->  {name: np.ndarray}"""
import collections
import json
import os
import pickle
import struct
import zipfile

import numpy as np

from ..errors import ConfigError

SAFETENSORS, SAFE_INDEX, TORCH_BIN = "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"
_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": "bf16", "I64": np.int64,
              "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_STORAGES = {"DoubleStorage": np.float64, "FloatStorage": np.float32, "HalfStorage": np.float16,
             "BFloat16Storage": "bf16", "LongStorage": np.int64, "IntStorage": np.int32,
             "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


def _bf16_to_f32(raw):
    """bfloat16 is the top half of a float32: widen the uint16 bits by 16."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_safetensors(path):
    """{name: array} of one .safetensors file."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n).decode("utf-8"))
    except (OSError, struct.error, ValueError) as e:
        raise ConfigError(f"{path} is not a readable safetensors file: {e}") from None
    raw = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n) if os.path.getsize(path) > 8 + n else b""
    out = {}
    for name, h in header.items():
        if name == "__metadata__":
            continue
        kind = _ST_DTYPES.get(h.get("dtype"))
        if kind is None:
            raise ConfigError(f"{path}: tensor {name!r} has dtype {h.get('dtype')!r}, which hpr cannot read")
        lo, hi = h["data_offsets"]
        buf = np.frombuffer(raw[lo:hi], dtype=np.uint16 if kind == "bf16" else kind)
        a = _bf16_to_f32(buf) if kind == "bf16" else buf
        out[name] = np.array(a.reshape(h["shape"]))  # a copy: the file may be closed or replaced
    return out


class _Storage:
    def __init__(self, name):
        self.name, self.dtype = name, _STORAGES[name]


def _rebuild_tensor(storage, offset, size, stride, *rest):
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.array(view)


class _TensorsOnly(pickle.Unpickler):
    """Builds tensors (and the dicts holding them) from a PyTorch zip checkpoint; any other class the
    pickle names is refused before it can be called."""

    def __init__(self, fileobj, archive, prefix, path):
        super().__init__(fileobj)
        self.archive, self.prefix, self.path = archive, prefix, path

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, requires_grad=False, hooks=None: data
        if module == "torch" and name in _STORAGES:
            return _Storage(name)
        raise ConfigError(f"{self.path}: the pickle asks for {module}.{name}, which is not a tensor; refusing to "
                          "run it (convert the file to model.safetensors with a tool you trust)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _Storage)):
            raise ConfigError(f"{self.path}: unexpected storage record {pid!r}")
        kind = pid[1].dtype
        raw = self.archive.read(f"{self.prefix}/data/{pid[2]}")
        buf = np.frombuffer(raw, dtype=np.uint16 if kind == "bf16" else kind)
        return _bf16_to_f32(buf) if kind == "bf16" else buf


def read_torch_bin(path, use_torch=True):
    """{name: array} of a PyTorch zip checkpoint, never executing its pickle."""
    if use_torch:
        try:
            import torch  # lazy: optional; a large import only this format needs
        except ImportError:
            torch = None
        if torch is not None:
            try:
                sd = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - torch raises many types for a bad or unsafe file
                raise ConfigError(f"{path}: torch.load(weights_only=True) refused it: {e}") from None
            return {k: (v.float() if v.dtype == torch.bfloat16 else v).numpy() for k, v in sd.items()}
    if not zipfile.is_zipfile(path):
        raise ConfigError(f"{path} is not a PyTorch zip checkpoint (the legacy format is not read); re-save it "
                          "with torch.save, or convert it to model.safetensors")
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ConfigError(f"{path}: no single data.pkl inside; not a PyTorch checkpoint")
        prefix = pkl[0][:-len("/data.pkl")] if "/" in pkl[0] else ""
        order = z.read(f"{prefix}/byteorder").decode().strip() if f"{prefix}/byteorder" in z.namelist() else "little"
        if order != "little":
            raise ConfigError(f"{path} was saved big-endian; hpr reads little-endian checkpoints only")
        with z.open(pkl[0]) as f:
            try:
                sd = _TensorsOnly(f, z, prefix, path).load()
            except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as e:
                raise ConfigError(f"{path}: cannot read its tensors: {e}") from None
    if not isinstance(sd, dict) or not all(isinstance(v, np.ndarray) for v in sd.values()):
        raise ConfigError(f"{path} does not hold a dict of tensors (a state_dict)")
    return dict(sd)


def read_weights(folder):
    """{name: array} of a Hugging Face model folder: model.safetensors, its sharded index, or
    pytorch_model.bin (in that order of preference)."""
    st = os.path.join(folder, SAFETENSORS)
    if os.path.exists(st):
        return read_safetensors(st)
    index = os.path.join(folder, SAFE_INDEX)
    if os.path.exists(index):
        try:
            with open(index) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
        except (OSError, ValueError, KeyError) as e:
            raise ConfigError(f"{index} is not a safetensors index with a weight_map: {e}") from None
        out = {}
        for s in shards:
            out.update(read_safetensors(os.path.join(folder, s)))
        return out
    pt = os.path.join(folder, TORCH_BIN)
    if os.path.exists(pt):
        return read_torch_bin(pt)
    raise ConfigError(f"{folder} has no weights: expected {SAFETENSORS}, {SAFE_INDEX} or {TORCH_BIN}")
