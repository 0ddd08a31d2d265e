"""Reduced precision that is checked, layer by layer, on the machine that runs it.

bfloat16 autocast is fast where the hardware has it, but a kernel can be wrong for some shapes:
on Intel processors with AMX, oneDNN's bfloat16 kernel for a 3x3 stride-2 convolution on a 3x2
input (P6 -> P7 at small image sizes) returned values off by 100% of the output's scale, or NaN,
while the same layer at 4x4 was within 0.4% of float32. So reduced precision is never trusted
blindly: :func:`check_model` runs each convolution of the model, with its own weights, at the
input shapes the run will meet, in float32 and under autocast on random input, and compares.

- A layer whose reduced-precision result is off by more than ``RELATIVE_ERROR_BOUND`` (the
  largest absolute difference over the largest float32 magnitude), or not finite, in the forward
  pass or (for training) in the gradients of its input and weight, is kept in float32 for inputs
  up to the largest failing one (:func:`keep_in_float32`): the heads, shared by all levels, still
  run P3-P5 in reduced precision when only P6 or P7 is wrong. Everything else stays as it was.
- On the CPU, inputs of at most ``CPU_FLOAT32_PIXELS`` run in float32 in every layer and are not
  checked: the kernel that was wrong there is never called at all.
- When what is kept in float32 is more than ``MAX_FLOAT32_SHARE`` of the model's convolution work, or
  the whole model's output under autocast is not finite, the run uses float32 as a whole.
- Verdicts are cached per machine (processor or GPU, PyTorch version, ISA limit, threads) and
  shape in ``precision_checks.json`` (``util.verdict_cache``), so a second run on the same machine
  and sizes checks nothing.

Measured on an AMD EPYC with AVX512-BF16 (2 threads): bfloat16 errors of 0.3-0.5% in the forward
pass and the gradients, so the bound of 5% leaves a factor of ten on both sides of it.
"""
import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from retinanet.util.device import choose_precision
from retinanet.util.verdict_cache import VerdictCache, machine_fingerprint

RELATIVE_ERROR_BOUND = 0.05
MAX_FLOAT32_SHARE = 0.5
# One fault seen so far was intermittent (NaN in about half of the calls), at a tiny input where a
# call costs little: such shapes are run several times. A NaN the check misses is still caught in
# training, where a non-finite step is retried in float32 (engine.training_step).
SMALL_INPUT_PIXELS = 64
SMALL_INPUT_REPEATS = 3
SMALL_LAYER_PIXELS = 32 * 32
# On the CPU, convolutions on inputs of at most this many pixels (8x8) always run in float32 under
# autocast, and are never run in reduced precision, not even to check them. The AMX fault was at
# such a size (3x2) and intermittent, the mark of a kernel reading memory it does not own; one that
# also writes there can corrupt the process in ways no comparison sees. These inputs are P6/P7 (and
# P5 at small image sizes): a negligible share of the work.
CPU_FLOAT32_PIXELS = 64


class Float32Conv2d(nn.Conv2d):
    """A Conv2d that runs in float32 inside an autocast region for inputs of at most
    ``float32_max_pixels`` (H x W): its reduced-precision kernel was found wrong on this machine at
    such a size (the faults seen were at tiny inputs; smaller unchecked sizes are kept with them).
    Larger inputs run as before. Same parameters and state dict as the Conv2d it replaces."""
    float32_max_pixels = math.inf

    def forward(self, x):
        if x.shape[-2] * x.shape[-1] > self.float32_max_pixels:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.float())


def keep_in_float32(layer, max_pixels=math.inf):
    """Make ``layer`` (an nn.Conv2d) run in float32 under autocast for inputs of at most
    ``max_pixels`` (H x W), in place."""
    if type(layer) is nn.Conv2d:
        layer.__class__ = Float32Conv2d
    elif not isinstance(layer, Float32Conv2d):
        raise TypeError(f"cannot keep a {type(layer).__name__} in float32")
    layer.float32_max_pixels = max_pixels


def keep_small_inputs_in_float32(model, floor=CPU_FLOAT32_PIXELS, limits=None):
    """Make every convolution of ``model`` run in float32 under autocast for inputs of at most
    ``floor`` pixels, and those named in ``limits`` ({name: pixels}) up to their own limit where it
    is larger; in place. ``floor`` 0 touches only the layers of ``limits``."""
    limits = limits or {}
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Conv2d) and (floor or name in limits):
            keep_in_float32(layer, max(limits.get(name, 0), floor))


def release_float32_layers(model):
    """Undo ``keep_in_float32`` on every layer of ``model`` (before a new check)."""
    for module in model.modules():
        if type(module) is Float32Conv2d:
            module.__class__ = nn.Conv2d
            module.__dict__.pop("float32_max_pixels", None)


@dataclass
class PrecisionCheck:
    """What :func:`check_model` found. ``use_reduced``: False when the run must use float32 as a
    whole; ``float32_layers``: names of the layers kept in float32; ``failures``: (layer, input
    shape, error) for each shape that failed; ``checked``: distinct (layer kind, shape) pairs."""
    dtype: torch.dtype
    input_sizes: list
    use_reduced: bool = True
    float32_layers: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    float32_max_pixels: dict = field(default_factory=dict)
    float32_floor: int = 0
    checked: int = 0
    from_cache: int = 0
    seconds: float = 0.0
    reason: str = ""

    def summary(self):
        """One clause for the log and config.json."""
        sizes = ", ".join(f"{h}x{w}" for h, w in self.input_sizes)
        head = (f"checked {self.checked} layer shapes at inputs {sizes} in {self.seconds:.2f} s"
                + (f" ({self.from_cache} from the cache)" if self.from_cache else "")
                + (f", inputs of at most {self.float32_floor} pixels in float32" if self.float32_floor else ""))
        if not self.use_reduced:
            return f"{head}: {self.reason}; using float32"
        if not self.float32_layers:
            return f"{head}: all within {RELATIVE_ERROR_BOUND:.0%} of float32"
        worst = ", ".join(f"{name} at {shape[-2]}x{shape[-1]} ({_format_error(error)})"
                          for name, shape, error in self.failures[:4])
        more = f" and {len(self.failures) - 4} more" if len(self.failures) > 4 else ""
        return (f"{head}: {len(self.float32_layers)} layer(s) kept in float32 for inputs as small as those where "
                f"their {_dtype_name(self.dtype)} result was off by more than {RELATIVE_ERROR_BOUND:.0%}: "
                f"{worst}{more}")

    def as_dict(self):
        return {"dtype": _dtype_name(self.dtype), "use_reduced": self.use_reduced,
                "float32_layers": list(self.float32_layers), "checked": self.checked,
                "from_cache": self.from_cache, "seconds": round(self.seconds, 3),
                "float32_max_pixels": dict(self.float32_max_pixels), "float32_floor": self.float32_floor,
                "input_sizes": [list(size) for size in self.input_sizes], "bound": RELATIVE_ERROR_BOUND,
                "failures": [[name, list(shape), _format_error(error)] for name, shape, error in self.failures]}


def check_model(model, device, dtype, input_sizes, *, training, channels_last=False, batch_size=1, use_cache=True):
    """Check ``model``'s convolutions under ``dtype`` autocast at ``input_sizes`` ((H, W) padded image
    sizes) and keep the failing ones in float32, in place. Returns a PrecisionCheck.

    training: also compare the gradients of each layer's input and weight. The model's weights,
    gradients and random state are left as they were."""
    started = time.perf_counter()
    release_float32_layers(model)
    cache = VerdictCache("precision_checks.json", machine_fingerprint(device)) if use_cache else None
    floor = CPU_FLOAT32_PIXELS if device.type == "cpu" else 0
    result = PrecisionCheck(dtype, [tuple(size) for size in input_sizes], float32_floor=floor)
    shapes = _conv_input_shapes(model, input_sizes, batch_size, above_pixels=floor)
    convs = dict(model.named_modules())
    failing = {}
    devices_state = torch.random.get_rng_state(), (torch.cuda.get_rng_state_all() if device.type == "cuda" else None)
    try:
        generator = torch.Generator(device="cpu").manual_seed(0)
        verdicts = {}
        for name, layer_shapes in shapes.items():
            layer = convs[name]
            for shape in layer_shapes:
                key = _layer_key(layer, shape, dtype, training, channels_last)
                if key not in verdicts:
                    cached = cache.get(key) if cache is not None else None
                    if cached is None:
                        cached = _check_conv(layer, shape, device, dtype, training, channels_last, generator)
                        if cache is not None:
                            cache.put(key, cached)
                    else:
                        result.from_cache += 1
                    verdicts[key] = cached
                error = verdicts[key]
                if not error <= RELATIVE_ERROR_BOUND:  # NaN fails too
                    failing.setdefault(name, []).append((shape, error))
        result.checked = len(verdicts)
    finally:
        torch.random.set_rng_state(devices_state[0])
        if devices_state[1] is not None:
            torch.cuda.set_rng_state_all(devices_state[1])
        if cache is not None:
            cache.save()
    result.failures = [(name, shape, error) for name, found in failing.items() for shape, error in found]
    limits = {name: max(shape[-2] * shape[-1] for shape, _ in found) for name, found in failing.items()}
    share = _work_share(shapes, convs, limits)
    if share > MAX_FLOAT32_SHARE:
        result.use_reduced = False
        result.reason = (f"{len(failing)} layers doing {share:.0%} of the convolution work are off by more than "
                         f"{RELATIVE_ERROR_BOUND:.0%} in {_dtype_name(dtype)}")
    else:
        keep_small_inputs_in_float32(model, floor, limits)
        result.float32_layers = sorted(failing)
        result.float32_max_pixels = limits
        if not _whole_model_finite(model, device, dtype, min(input_sizes, key=lambda s: s[0] * s[1]), channels_last):
            release_float32_layers(model)
            result.use_reduced, result.float32_layers = False, []
            result.reason = f"the whole model's output under {_dtype_name(dtype)} autocast is not finite"
    result.seconds = time.perf_counter() - started
    return result


def settle_precision(model, device, amp, input_sizes, *, training, channels_last=False, use_cache=True):
    """The run's autocast dtype (None: float32) for ``--amp auto|on|off``, checked on this machine.

    Returns (dtype or None, the sentence for the log and config.json, PrecisionCheck or None). The
    model must already be on ``device``; failing layers are kept in float32 in place."""
    dtype, reason = choose_precision(device, amp)
    if dtype is None:
        release_float32_layers(model)
        return None, reason, None
    check = check_model(model, device, dtype, input_sizes, training=training, channels_last=channels_last,
                        use_cache=use_cache)
    if not check.use_reduced:
        return None, f"float32 (--amp {amp}: {check.summary()})", check
    return dtype, f"{reason}; {check.summary()}", check


def check_input_sizes(min_side, max_side, image_sizes=None, sides=None, rot90=False):
    """The padded (H, W) inputs a run meets at its extremes: the smallest and the largest of the
    portrait, square and landscape inputs, the widest and the tallest, over ``image_sizes`` ((width, height) of the images; a few typical
    shapes when None) resized with each short side of ``sides`` (default [min_side]) and the long
    side capped at ``max_side``, padded to multiples of 32."""
    from retinanet.data.transforms import resize_scale
    image_sizes = image_sizes or [(1, 1), (4, 3), (3, 4), (2, 1), (1, 2)]
    sides = sorted(set(sides or [min_side]))
    shapes = set()
    for width, height in set(image_sizes):
        for side in (sides[0], sides[-1]):
            scale = resize_scale(height, width, side, max_side)
            shape = (_pad(max(1, round(height * scale))), _pad(max(1, round(width * scale))))
            shapes.add(shape)
            if rot90:
                shapes.add(shape[::-1])
    extremes = {max(shapes, key=lambda s: (s[1] / s[0], s)), max(shapes, key=lambda s: (s[0] / s[1], s))}
    for orientation in (-1, 0, 1):  # portrait, square, landscape: the smallest and the largest of each
        group = [shape for shape in shapes if (shape[1] > shape[0]) - (shape[1] < shape[0]) == orientation]
        if group:
            extremes |= {min(group, key=lambda s: (s[0] * s[1], s)), max(group, key=lambda s: (s[0] * s[1], s))}
    return sorted(extremes)


def _pad(value, divisor=32):
    return int(math.ceil(value / divisor) * divisor)


def _conv_input_shapes(model, input_sizes, batch_size, above_pixels=0):
    """{conv name: [input shape, ...]} of every nn.Conv2d over a forward pass at each size, found on
    a copy of the model on the meta device (no arithmetic, no memory). Normalisation layers keep
    the shape, and their meta implementations are slow, so the copy has none.

    Every layer is checked at the smallest and the largest input; at the sizes between, only
    layers whose input is at most SMALL_LAYER_PIXELS, where the faults were seen and a check
    costs microseconds (the large shapes there would multiply the check's cost). Inputs of at most
    ``above_pixels`` are left out (they run in float32 whatever the check finds)."""
    meta_model = copy.deepcopy(model).to("meta")
    for parent in list(meta_model.modules()):
        for child_name, child in parent.named_children():
            if "Norm" in type(child).__name__:
                setattr(parent, child_name, nn.Identity())
    shapes, full = {}, set(_ends(input_sizes))

    def record(name, shape, size):
        pixels = shape[-2] * shape[-1]
        if pixels > above_pixels and (size in full or pixels <= SMALL_LAYER_PIXELS):
            shapes.setdefault(name, []).append(tuple(shape))

    current = {}
    hooks = [module.register_forward_pre_hook(
        lambda module, inputs, name=name: record(name, inputs[0].shape, current["size"]))
        for name, module in meta_model.named_modules() if isinstance(module, nn.Conv2d)]
    try:
        with torch.no_grad():
            for height, width in input_sizes:
                current["size"] = (height, width)
                meta_model(torch.empty(batch_size, 3, height, width, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return {name: list(dict.fromkeys(found)) for name, found in shapes.items()}


def _ends(input_sizes):
    """The smallest and the largest input by area."""
    sizes = [tuple(size) for size in input_sizes]
    return {min(sizes, key=lambda s: (s[0] * s[1], s)), max(sizes, key=lambda s: (s[0] * s[1], s))}


def _check_conv(layer, shape, device, dtype, training, channels_last, generator):
    """The largest relative error of ``layer``'s ``dtype`` result against float32 on random input of
    ``shape`` (forward, and with ``training`` the gradients of input and weight); inf if not finite."""
    weight = layer.weight.detach().to(device).float().clone()
    bias = None if layer.bias is None else layer.bias.detach().to(device).float().clone()
    x = torch.randn(shape, generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def run(reduced):
        inputs = x.clone().requires_grad_(training)
        w = weight.clone().requires_grad_(training)
        with torch.autocast(device.type, dtype=dtype, enabled=reduced):
            out = F.conv2d(inputs, w, bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        if not training:
            return [out.detach()]
        upstream = torch.randn(out.shape, generator=torch.Generator(device="cpu").manual_seed(1)).to(device)
        grads = torch.autograd.grad(out, (inputs, w), upstream.to(out.dtype))
        return [out.detach()] + [grad.detach() for grad in grads]

    with torch.enable_grad() if training else torch.no_grad():
        reference = run(False)
        repeats = SMALL_INPUT_REPEATS if shape[-2] * shape[-1] <= SMALL_INPUT_PIXELS else 1
        worst = 0.0
        for _ in range(repeats):
            for got, want in zip(run(True), reference):
                worst = max(worst, relative_error(got, want))
    return worst


def relative_error(got, want):
    """max |got - want| / max |want| in float32; inf when ``got`` is not finite."""
    got, want = got.float(), want.float()
    if not torch.isfinite(got).all():
        return math.inf
    scale = want.abs().max().item()
    return (got - want).abs().max().item() / max(scale, 1e-12)


def _whole_model_finite(model, device, dtype, size, channels_last):
    """True when the model's outputs under autocast are finite on random input of ``size``."""
    was_training = model.training
    state = torch.random.get_rng_state()
    model.eval()
    try:
        x = torch.randn(1, 3, *size, generator=torch.Generator(device="cpu").manual_seed(2)).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            outputs = model(x)
        return all(torch.isfinite(outputs[key]).all().item() for key in ("cls_logits", "box_deltas"))
    finally:
        model.train(was_training)
        torch.random.set_rng_state(state)


def _work_share(shapes, convs, limits):
    """The share of the multiply-adds over all checked shapes that ``limits`` ({layer name: largest
    H x W kept in float32}) would move to float32."""
    def work(layer, shape):
        out_pixels = shape[0] * math.ceil(shape[2] / layer.stride[0]) * math.ceil(shape[3] / layer.stride[1])
        return out_pixels * layer.weight.shape.numel()

    everything = sum(work(convs[name], shape) for name, layer_shapes in shapes.items() for shape in layer_shapes)
    kept = sum(work(convs[name], shape) for name, limit in limits.items() for shape in shapes[name]
               if shape[-2] * shape[-1] <= limit)
    return kept / everything if everything else 0.0


def _layer_key(layer, shape, dtype, training, channels_last):
    parts = [layer.in_channels, layer.out_channels, *layer.kernel_size, *layer.stride, *layer.padding,
             *layer.dilation, layer.groups, int(layer.bias is not None), *shape, _dtype_name(dtype),
             "train" if training else "eval", "channels_last" if channels_last else "contiguous"]
    return "conv2d:" + ",".join(str(part) for part in parts)


def _dtype_name(dtype):
    return str(dtype).replace("torch.", "")


def _format_error(error):
    return "not finite" if not math.isfinite(error) else f"{error:.3g}"
