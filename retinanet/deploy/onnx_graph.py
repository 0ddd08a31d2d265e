"""Building ONNX graphs in code: ``GraphBuilder`` collects nodes and constants, and OpenCV's two
resizes of an 8-bit image are rebuilt in ONNX operators, as ``data.transforms.resize`` uses them:
``linear_resize`` (``INTER_LINEAR``, enlarging) bit for bit, ``area_resize`` (``INTER_AREA``,
shrinking) as the exact area mean in float64, where OpenCV's float32 sum can round a value within
a rounding error of half a level the other way.
"""
import numpy as np


class GraphBuilder:
    """Nodes and constants added to a graph, each output named uniquely."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.initializers, self.count = [], [], 0

    def name(self, hint):
        self.count += 1
        return f"e2e_{hint}_{self.count}"  # apart from the exported network's own names

    def const(self, value, dtype, hint="const"):
        name = self.name(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def i64(self, *values):
        return self.const(list(values), np.int64, "i64")

    def f32(self, value):
        return self.const(value, np.float32, "f32")

    def branch(self, build, element_type):
        """A subgraph for an ``If`` node: ``build()`` adds its nodes (it sees the outer graph's
        values) and returns the one output, of ONNX ``element_type``; constants stay outside."""
        outer, self.nodes = self.nodes, []
        try:
            output = build()
            nodes = self.nodes
        finally:
            self.nodes = outer
        output_info = self.helper.make_tensor_value_info(output, element_type, None)
        return self.helper.make_graph(nodes, self.name("branch"), [], [output_info])

    def op(self, op_type, *inputs, outputs=1, output_names=None, **attributes):
        names = output_names or [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names


def area_resize(b, pixels, sizes, new_sizes):
    """OpenCV's INTER_AREA in ONNX operators: each output pixel the mean of the input area it covers,
    fractions of pixels weighted by their share, one axis after the other, in float64. The mean over
    [p, q) is (S(q) - S(p)) / (q - p), where S is the cumulative sum, linear within a pixel.
    pixels (1, 3, H, W) float64; sizes and new_sizes: (H, W) and the new (H, W), int64 scalars."""
    double, int64 = b.onnx.TensorProto.DOUBLE, b.onnx.TensorProto.INT64
    for axis, size, new_size in ((3, sizes[1], new_sizes[1]), (2, sizes[0], new_sizes[0])):
        size_d, new_d = b.op("Cast", size, to=double), b.op("Cast", new_size, to=double)
        step = b.op("Div", b.const(1.0, np.float64), b.op("Div", new_d, size_d))  # OpenCV's scale: 1 / (new / old)
        pads = [0] * 8
        pads[axis] = 1
        cumulative = b.op("Pad", b.op("CumSum", pixels, b.const(axis, np.int64)), b.i64(*pads))  # S at 0 .. size
        positions = b.op("Mul", b.op("Cast", b.op("Range", b.const(0, np.int64), b.op("Add", new_size, b.const(1, np.int64)),
                                                b.const(1, np.int64)), to=double), step)
        whole = b.op("Min", b.op("Cast", b.op("Floor", positions), to=int64), b.op("Sub", size, b.const(1, np.int64)))
        fraction = b.op("Reshape", b.op("Sub", positions, b.op("Cast", whole, to=double)),
                        b.i64(-1) if axis == 3 else b.i64(-1, 1))  # along the axis, for broadcasting
        at = b.op("Add", b.op("Gather", cumulative, whole, axis=axis),
                  b.op("Mul", fraction, b.op("Gather", pixels, whole, axis=axis)))  # S at each position
        upper = b.op("Slice", at, b.i64(1), b.i64(2 ** 62), b.i64(axis))
        lower = b.op("Slice", at, b.i64(0), b.i64(-1), b.i64(axis))
        pixels = b.op("Div", b.op("Sub", upper, lower), step)
    return pixels

def linear_coefficients(b, size, new_size, clamp):
    """OpenCV's INTER_LINEAR coefficients for one axis of an 8-bit image, in 11-bit fixed point:
    (first source index, second, its weight, the second's), each (new_size,). ``clamp``: at the
    edges the weight goes to the edge pixel (OpenCV does so along x; along y it keeps the fraction
    and repeats the edge row)."""
    double, single, int64 = (b.onnx.TensorProto.DOUBLE, b.onnx.TensorProto.FLOAT, b.onnx.TensorProto.INT64)
    scale = b.op("Div", b.const(1.0, np.float64), b.op("Div", b.op("Cast", new_size, to=double),
                                                       b.op("Cast", size, to=double)))
    positions = b.op("Cast", b.op("Range", b.const(0, np.int64), new_size, b.const(1, np.int64)), to=double)
    exact = b.op("Cast", b.op("Sub", b.op("Mul", b.op("Add", positions, b.const(0.5, np.float64)), scale),
                              b.const(0.5, np.float64)), to=single)
    floor = b.op("Floor", exact)
    fraction, index = b.op("Sub", exact, floor), b.op("Cast", floor, to=int64)
    last = b.op("Sub", size, b.const(1, np.int64))
    if clamp:
        zero_f, zero_i = b.f32(0.0), b.const(0, np.int64)
        below, beyond = b.op("Less", index, zero_i), b.op("GreaterOrEqual", index, last)
        fraction = b.op("Where", b.op("Or", below, beyond), zero_f, fraction)
        index = b.op("Where", below, zero_i, b.op("Where", beyond, last, index))
    unit = b.f32(2048.0)
    first_weight = b.op("Cast", b.op("Round", b.op("Mul", b.op("Sub", b.f32(1.0), fraction), unit)), to=int64)
    second_weight = b.op("Cast", b.op("Round", b.op("Mul", fraction, unit)), to=int64)
    zero = b.const(0, np.int64)
    return (b.op("Clip", index, zero, last), b.op("Clip", b.op("Add", index, b.const(1, np.int64)), zero, last),
            first_weight, second_weight)


def linear_resize(b, pixels, sizes, new_sizes):
    """OpenCV's INTER_LINEAR of an 8-bit image, bit for bit: 11-bit fixed-point weights, the rows
    interpolated in integers, then the columns as OpenCV's vector code rounds them.
    pixels (1, 3, H, W) int64; sizes and new_sizes: (H, W) and the new (H, W), int64 scalars."""
    first_x, second_x, weight_x0, weight_x1 = linear_coefficients(b, sizes[1], new_sizes[1], clamp=True)
    rows = b.op("Add", b.op("Mul", b.op("Gather", pixels, first_x, axis=3), weight_x0),
                b.op("Mul", b.op("Gather", pixels, second_x, axis=3), weight_x1))
    first_y, second_y, weight_y0, weight_y1 = linear_coefficients(b, sizes[0], new_sizes[0], clamp=False)
    column = b.i64(-1, 1)
    weight_y0, weight_y1 = b.op("Reshape", weight_y0, column), b.op("Reshape", weight_y1, column)
    sixteen, shift16 = b.const(16, np.int64), b.const(65536, np.int64)  # >> 4 and >> 16 of non-negative values
    upper = b.op("Div", b.op("Mul", weight_y0, b.op("Div", b.op("Gather", rows, first_y, axis=2), sixteen)), shift16)
    lower = b.op("Div", b.op("Mul", weight_y1, b.op("Div", b.op("Gather", rows, second_y, axis=2), sixteen)), shift16)
    return b.op("Div", b.op("Add", b.op("Add", upper, lower), b.const(2, np.int64)), b.const(4, np.int64))
