"""Rewrite PaddleOCR's exported ONNX graphs into fewer operators, in memory, at load time.

The shipped model files and their sha256 checks are untouched; the rewritten graph gives
the same boxes and texts (scores equal to float rounding; ``tests/test_pixel_speed.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.errors import VeilError

__all__ = ["FoldError", "fold_graph"]


class FoldError(VeilError, RuntimeError):
    """The graph cannot be rewritten (the ``onnx`` package is missing)."""


def fold_graph(model: bytes) -> bytes:
    """The same network with fewer operators (results equal to float rounding, ~1e-6).

    PaddleOCR's ONNX export spells each PPLCNetV3 block as convolution, scalar affine
    (``Mul``, ``Add``), hard-swish as four operators (``Add 3``, ``Clip 0..6``, ``Mul``,
    ``Div 6``) and another scalar affine; ONNX Runtime fuses none of these, and on a
    CPU the element-wise passes cost about as much as the convolutions. Rewritten here:
    a scalar affine right after a convolution goes into its weights and bias; hard-swish
    becomes ``x * HardSigmoid(x)`` (opset 6, two operators); a scalar affine right
    before an unpadded 1x1 convolution goes into its weights and bias (exact: no padding
    is ever scaled). Nothing else changes.

    Raises
    ------
    FoldError
        When the ``onnx`` package is not installed.
    """
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as exc:
        raise FoldError("folding the PP-OCR graph needs the 'onnx' package "
                        "(or build the engine with fold=False)") from exc
    proto = onnx.load_from_string(model)
    graph = proto.graph
    arrays = {n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
              if n.op_type == "Constant" and [a.name for a in n.attribute] == ["value"]}
    arrays.update({i.name: numpy_helper.to_array(i) for i in graph.initializer})
    outputs = {o.name for o in graph.output}

    def scalar(name: str) -> float | None:
        value = arrays.get(name)
        return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

    users: dict[str, list[Any]] = {}

    def index() -> None:  # names to the nodes reading them, at the start of each pass
        users.clear()
        for node in graph.node:
            for name in node.input:
                users.setdefault(name, []).append(node)

    def sole(name: str, op: str) -> Any:
        found = users.get(name, [])
        ok = len(found) == 1 and found[0].op_type == op and name not in outputs
        return found[0] if ok else None

    def with_scalar(op: str, name: str) -> tuple[Any, float | None]:
        """The sole ``op`` user of ``name`` and its other, scalar operand."""
        user = sole(name, op)
        rest = [] if user is None else [i for i in user.input if i != name]
        return user, scalar(rest[0]) if len(rest) == 1 else None

    def set_conv(conv: Any, data: Any, weight: np.ndarray, bias: np.ndarray) -> None:
        names = (conv.output[0] + "/folded_w", conv.output[0] + "/folded_b")
        for name, value in zip(names, (weight, bias), strict=True):
            arrays[name] = value.astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(arrays[name], name))
        del conv.input[:]
        conv.input.extend([data, *names])

    def conv_params(conv: Any) -> tuple[np.ndarray, np.ndarray] | None:
        if conv.input[1] not in arrays:
            return None
        weight = arrays[conv.input[1]].astype(np.float32)
        bias = arrays[conv.input[2]] if len(conv.input) > 2 else np.zeros(weight.shape[0])
        return weight, bias.astype(np.float32)

    index()
    for conv in [n for n in graph.node if n.op_type == "Conv"]:  # Conv -> Mul s [-> Add t]
        mul, s = with_scalar("Mul", conv.output[0])
        params = conv_params(conv)
        if s is None or params is None:
            continue
        add, t = with_scalar("Add", mul.output[0])
        last = mul if t is None else add
        set_conv(conv, conv.input[0], params[0] * s, params[1] * s + (t or 0.0))
        conv.output[0] = last.output[0]
        graph.node.remove(mul)
        if last is add:
            graph.node.remove(add)
    index()
    for add in [n for n in graph.node if n.op_type == "Add"]:  # hard-swish
        data = [i for i in add.input if scalar(i) is None]
        if len(data) != 1 or scalar(next(i for i in add.input if i != data[0])) != 3.0:
            continue
        clip = sole(add.output[0], "Clip")
        if clip is None or [scalar(i) for i in clip.input[1:]] != [0.0, 6.0]:
            continue
        mul = sole(clip.output[0], "Mul")
        div = mul and sole(mul.output[0], "Div")
        if div is None or set(mul.input) != {data[0], clip.output[0]} or \
                scalar(div.input[1]) != 6.0:
            continue
        at = next(k for k, node in enumerate(graph.node) if node is add)
        for node in (add, clip, mul, div):
            graph.node.remove(node)
        gate = div.output[0] + "/gate"
        graph.node.insert(at, helper.make_node("Mul", [data[0], gate], [div.output[0]]))
        graph.node.insert(at, helper.make_node("HardSigmoid", data, [gate], alpha=1 / 6,
                                               beta=0.5))
    index()
    for mul in [n for n in graph.node if n.op_type == "Mul"]:  # Mul s -> Add t -> Conv 1x1
        data = [i for i in mul.input if scalar(i) is None]
        s = scalar(next(iter(set(mul.input) - set(data)), "")) if len(data) == 1 else None
        add, t = with_scalar("Add", mul.output[0]) if s is not None else (None, None)
        conv = sole(add.output[0], "Conv") if add is not None and t is not None else None
        params = None if conv is None else conv_params(conv)
        attrs = {} if conv is None else {a.name: helper.get_attribute_value(a)
                                         for a in conv.attribute}
        if params is None or params[0].shape[1:] != (params[0].shape[1], 1, 1) or \
                any(attrs.get("pads", [])) or attrs.get("group", 1) != 1:
            continue
        weight, bias = params
        set_conv(conv, data[0], weight * s, bias + t * weight.sum(axis=(1, 2, 3)))
        graph.node.remove(mul)
        graph.node.remove(add)
    used = {i for n in graph.node for i in n.input} | outputs
    for node in [n for n in graph.node if n.op_type == "Constant" and n.output[0] not in used]:
        graph.node.remove(node)
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return proto.SerializeToString()
