"""Float16 versions of the float32 graphs of :func:`sam2_fast.export.export_onnx`
(``dtype="fp16"``): weights stored as float16 (files half the size), activations computed in
float16, the inputs and outputs still float32 with the casts at the graph's boundary: the
same contract and ``export.json`` tensor specs, so :class:`~sam2_fast.export.OnnxVideoTracker`
and user code are unchanged.

Why a rewrite of the float32 graph and not a trace of the model in half precision: the
rewrite starts from what the float32 export already checked (names, shapes, dynamic axes,
parity), needs no float16 kernels in torch at export time, leaves the caller's model alone,
and chooses per node what stays float32, which a half-precision trace cannot.

The policy is torch autocast's, on ONNX ops:

* ``MatMul``, ``Gemm``, ``Conv``, ``ConvTranspose`` compute in float16;
* :data:`FLOAT32_OPS` compute in float32: ``Sin``, ``Cos``, ``Range``, and the statistics of
  the decomposed ``LayerNorm2d`` (``ReduceMean``, ``Pow``, ``Sqrt``): a float16 square
  overflows above 256;
* the nodes that feed a ``Sin`` / ``Cos`` compute in float32: the random-Fourier encoding of
  ``point_coords`` (its ``MatMul`` included; arguments of tens of radians, where float16's
  spacing is 0.016 rad) and the sine encoding of ``obj_ptr_tpos``;
* every other op computes in the widest float type of its computed inputs, so what follows a
  float32 op stays float32 up to the next matrix product (the ``LayerNorm2d`` + GELU of the
  mask paths, the prompt tokens, which start from the point encodings, and the FPN's top-down
  upsampling, which the model itself does in float32); graph inputs and constants do not
  widen, they are cast to the node's type;
* nodes whose float inputs are all constants or shape arithmetic compute in float32 (the
  runtime folds them; position tables, and ``65536`` tokens overflow float16), except data
  movement (``Reshape``, ``Expand``...) that prepares a weight for float16 readers, so that
  the weight is stored as float16;
* ``LayerNormalization`` runs in float16 with float32 statistics (``stash_type`` 1, its
  default), ``Softmax`` in float16 (float32 would change nothing: its input comes from a
  float16 product and its output goes to one, and the runtimes' float16 kernels accumulate
  in float32).

Measured with random weights (sam2.1-hiera-tiny at 256, every float16 value rounded as a
float16 provider stores it): the float32 parts lower the decoder's logits error from rel-L2
1.3e-3 (everything float16) to 1.1e-3; they are there for the ranges trained weights and
large inputs reach, which random weights do not.

onnxruntime 1.32's CPU execution provider has float16 kernels on x86 only for data movement,
``LayerNormalization`` and ``Clip``: it inserts casts around the other ops itself and computes
chains of them in float32, so on a CPU the files are half the size but not faster (and a
little more exact than on a float16 provider); the CUDA and WebGPU providers run them in
float16.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Dict, List, Optional, Set, Tuple

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from sam2_fast.errors import ExportError

FLOAT, FLOAT16, BOOL = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BOOL

#: ops computed in float16: their float inputs are cast to float16
FLOAT16_OPS = frozenset({"MatMul", "Gemm", "Conv", "ConvTranspose"})
#: ops computed in float32 (the module docstring says why)
FLOAT32_OPS = frozenset({"Sin", "Cos", "Range", "ReduceMean", "Pow", "Sqrt"})
#: encodings: the nodes that feed them compute in float32
ENCODING_OPS = frozenset({"Sin", "Cos"})
#: ops that read only the shape of their input: never a cast before them
SHAPE_OPS = frozenset({"Shape", "Size"})
#: ops whose output is a constant given by an attribute
CONSTANT_OPS = frozenset({"Constant", "ConstantOfShape"})
#: ops that move values without arithmetic: exact in either type, so one that rearranges a
#: weight for float16 consumers does it in float16 and the weight is stored as float16
MOVE_OPS = frozenset({"Reshape", "Transpose", "Expand", "Slice", "Squeeze", "Unsqueeze", "Concat", "Gather",
                      "Tile", "Identity", "Split", "Flatten"})
#: inputs that keep their own type (Resize's roi and scales are float32 whatever X is)
FIXED_INPUTS = {"Resize": frozenset({1, 2})}
_FLOATS = (FLOAT, FLOAT16)


def _value_types(model: onnx.ModelProto) -> Dict[str, int]:
    """Element type of every value of the graph (shape inference fills the intermediates)."""
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {t.name: t.data_type for t in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    for node in graph.node:
        if node.op_type in CONSTANT_OPS:
            value = [a.t.data_type for a in node.attribute if a.name == "value"]
            types[node.output[0]] = value[0] if value else FLOAT
    return types


def _encoding_nodes(graph: onnx.GraphProto, types: Dict[str, int]) -> Set[int]:
    """Indices of the nodes that feed a ``Sin`` / ``Cos`` through float values."""
    producer = {out: i for i, node in enumerate(graph.node) for out in node.output}
    marked: Set[int] = set()
    todo = [i for i, node in enumerate(graph.node) if node.op_type in ENCODING_OPS]
    while todo:
        for name in graph.node[todo.pop()].input:
            i = producer.get(name)
            if i is None or i in marked or types.get(name) != FLOAT:
                continue
            marked.add(i)
            if graph.node[i].op_type not in SHAPE_OPS:
                todo.append(i)
    return marked


def _float_inputs(node: onnx.NodeProto, types: Dict[str, int]) -> List[int]:
    fixed = FIXED_INPUTS.get(node.op_type, ())
    return [i for i, name in enumerate(node.input) if name and types.get(name) in _FLOATS and i not in fixed]


def _cast_target(node: onnx.NodeProto) -> onnx.AttributeProto:
    return next(a for a in node.attribute if a.name == "to")


def _decide(graph: onnx.GraphProto, types: Dict[str, int]) -> Tuple[Dict[int, int], Dict[str, int], Set[int]]:
    """The policy of the module docstring -> (the type each node computes in, by index; the
    float type of each value a node writes; the indices of the static nodes: constants,
    shapes and what only they compute, which the runtime folds)."""
    encodings = _encoding_nodes(graph, types)
    graph_inputs = {v.name for v in graph.input}
    static_values = {t.name for t in graph.initializer}
    static: Set[int] = set()
    compute: Dict[int, int] = {}
    written: Dict[str, int] = {}
    for index, node in enumerate(graph.node):
        op = node.op_type
        if op in CONSTANT_OPS or op in SHAPE_OPS or all(n in static_values for n in node.input if n):
            static.add(index)
            static_values.update(node.output)
        floats = _float_inputs(node, types)
        if op == "Cast":
            to = _cast_target(node).i
            if to == FLOAT and types.get(node.input[0]) == BOOL and index not in static:
                to = FLOAT16  # 0 / 1: exact in float16
            written[node.output[0]] = to
            continue
        if op in CONSTANT_OPS or op in SHAPE_OPS or not floats:
            continue
        if index in static or op in FLOAT32_OPS or index in encodings:
            compute[index] = FLOAT
        elif op in FLOAT16_OPS:
            compute[index] = FLOAT16
        else:  # the widest computed input; graph inputs, constants and shapes do not widen
            widening = {written.get(node.input[i]) for i in floats
                        if node.input[i] not in static_values and node.input[i] not in graph_inputs}
            compute[index] = FLOAT if FLOAT in widening else FLOAT16
        written.update((name, compute[index]) for name in node.output if types.get(name) in _FLOATS)
    # static moves whose every reader computes in float16 move float16 values
    readers: Dict[str, List[int]] = {}
    for index, node in enumerate(graph.node):
        if node.op_type not in SHAPE_OPS:
            for i in _float_inputs(node, types):
                readers.setdefault(node.input[i], []).append(index)
    outputs = {v.name for v in graph.output}
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type in MOVE_OPS and index in static and compute.get(index) == FLOAT:
            names = [n for n in node.output if n in written]
            reads = [j for n in names for j in readers.get(n, [])]
            if reads and not outputs.intersection(names) and all(compute.get(j) == FLOAT16 for j in reads):
                compute[index] = FLOAT16
                written.update((n, FLOAT16) for n in names)
    return compute, written, static


def _to_float16(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    """``tensor`` as float16 under ``name``; refuses finite values beyond float16's range."""
    values = numpy_helper.to_array(tensor)
    largest = float(np.abs(values[np.isfinite(values)]).max(initial=0.0))
    if largest > np.finfo(np.float16).max:
        raise ExportError(f"{tensor.name}: values beyond float16's range (|x| up to {largest:g})")
    return numpy_helper.from_array(values.astype(np.float16), name)


def _tensor_value(node: onnx.NodeProto) -> Optional[onnx.TensorProto]:
    """The float32 tensor attribute of a ``Constant`` / ``ConstantOfShape`` node, if any."""
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == FLOAT:
            return attr.t
    return None


def convert_to_float16(model: onnx.ModelProto) -> Dict[str, Any]:
    """Rewrite the float32 ``model`` in place as float16 inside (see the module docstring),
    with the same inputs and outputs. Returns a summary: the nodes that compute in float32 by
    op type (``"float32_ops"``; constants and shape arithmetic left out) and the bytes of
    float16 and float32 weights. Raises :class:`ExportError` for a graph with subgraphs or
    values of unknown type."""
    graph = model.graph
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in graph.node for a in n.attribute):
        raise ExportError(f"{graph.name}: subgraphs (If / Loop / Scan) are not supported")
    types = _value_types(model)
    unknown = [n for node in graph.node for n in node.input if n and types.get(n, TensorProto.UNDEFINED) == 0]
    if unknown:
        raise ExportError(f"{graph.name}: the type of {unknown[0]!r} is unknown")
    compute, written, static = _decide(graph, types)
    float32_ops = Counter(graph.node[i].op_type for i, t in compute.items() if t == FLOAT and i not in static)
    initializers = {t.name: t for t in graph.initializer if t.data_type == FLOAT}
    constants = {n.output[0]: n for n in graph.node if n.op_type in CONSTANT_OPS and _tensor_value(n) is not None}
    uses: Dict[str, List[Tuple[onnx.NodeProto, int, int]]] = {}  # constants: (node, input, type)
    casts: Dict[Tuple[str, int], str] = {}
    nodes: List[onnx.NodeProto] = []
    for index, node in enumerate(graph.node):
        if node.op_type == "Cast":
            _cast_target(node).i = written[node.output[0]]
        elif index in compute:
            for i in _float_inputs(node, types):
                name = node.input[i]
                if name in initializers or name in constants:
                    uses.setdefault(name, []).append((node, i, compute[index]))
                elif written.get(name, types[name]) != compute[index]:
                    if (name, compute[index]) not in casts:
                        casts[name, compute[index]] = cast = f"{name}/{'fp16' if compute[index] == FLOAT16 else 'fp32'}"
                        nodes.append(onnx.helper.make_node("Cast", [name], [cast], to=compute[index], name=f"{cast}/Cast"))
                    node.input[i] = casts[name, compute[index]]
        nodes.append(node)

    # constants: float16 where every reader computes in float16, a float16 copy where some do
    for name, readers in uses.items():
        half = [(node, i) for node, i, t in readers if t == FLOAT16]
        if not half:
            continue
        target = name if len(half) == len(readers) else f"{name}/fp16"
        for node, i in half:
            node.input[i] = target
        if name in initializers:
            converted = _to_float16(initializers[name], target)
            if target == name:
                initializers[name].CopyFrom(converted)
            else:
                graph.initializer.append(converted)
            continue
        constant = constants[name]
        if target != name:
            copy = onnx.NodeProto()
            copy.CopyFrom(constant)
            copy.output[0], copy.name = target, f"{constant.name}/fp16"
            nodes.insert(nodes.index(constant) + 1, copy)
            constant = copy
        value = _tensor_value(constant)
        value.CopyFrom(_to_float16(value, value.name))

    # the boundary: float16 outputs are cast back to float32 under their contract names
    for output in graph.output:
        if written.get(output.name) == FLOAT16:
            inner = f"{output.name}/fp16"
            for node in nodes:
                node.output[:] = [inner if x == output.name else x for x in node.output]
                node.input[:] = [inner if x == output.name else x for x in node.input]
            nodes.append(onnx.helper.make_node("Cast", [inner], [output.name], to=FLOAT, name=f"{output.name}/Cast"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]
    weight_bytes = Counter()
    for tensor in graph.initializer:
        if tensor.data_type in _FLOATS:
            weight_bytes[tensor.data_type] += numpy_helper.to_array(tensor).nbytes
    return {
        "float32_ops": dict(sorted(float32_ops.items())),
        "float16_weight_bytes": weight_bytes[FLOAT16],
        "float32_weight_bytes": weight_bytes[FLOAT],
    }
