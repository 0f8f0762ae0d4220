"""MLPs and convnets: ``nn.Linear``, ``nn.Conv1d/2d/3d``, BatchNorm, LayerNorm, pooling.

The converter walks the model's leaf modules in registration order (nested ``nn.Sequential`` s
and simple modules whose submodules run in that order) and reads them as a chain of layers:
one node group per layer output (a unit per feature or channel), one node per 1-D parameter.
Unit-wise modules without parameters (activations, dropout, pooling, ...) are skipped; the
verifier checks, against the model's real outputs, that the chain reading was right.

The same chain can be read from a ``(name, shape)`` list (``arch="sequential"``): 2-D weights
are linear layers, 3-D to 5-D weights convolutions, 1-D weights normalization scales.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import edge_types as et
from ..builder import GraphBuilder
from ..errors import ParameterMismatchError, UnsupportedModelError
from ..registry import register
from ..source import ModelSource

__all__ = ["register_unitwise", "UNITWISE", "sample_model", "sample_mlp", "sample_convnet"]

UNITWISE: set[type] = {
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.SELU, nn.CELU,
    nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh,
    nn.Tanhshrink, nn.Softshrink, nn.Hardshrink, nn.LogSigmoid, nn.Threshold,
    nn.Softmax, nn.LogSoftmax,
}
"""Parameter-free modules that act on each unit (or symmetrically on all units) of a layer."""

_POOLS = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def register_unitwise(*classes: type) -> None:
    """Tell the sequential converter that these parameter-free module classes act unit-wise."""
    UNITWISE.update(classes)


@dataclass
class _Layer:
    kind: str  # linear | conv | norm | flatten | pool | global_pool
    name: str
    size_in: int = 0
    size_out: int = 0
    weight: str | None = None
    bias: str | None = None
    buffers: list[str] = field(default_factory=list)
    spatial_dims: int = 0
    is_layer_norm: bool = False


def _is_global(pool: nn.Module) -> bool:
    size = getattr(pool, "output_size", None)
    if size is None:
        return False
    sizes = size if isinstance(size, tuple) else (size,)
    return all(s == 1 for s in sizes)


def _leaves(module: nn.Module, prefix: str = ""):
    own = [n for n, _ in module.named_parameters(recurse=False)]
    children = list(module.named_children())
    if own and children:
        raise UnsupportedModelError(
            f"module '{prefix or type(module).__name__}' ({type(module).__name__}) holds parameter "
            f"'{own[0]}' itself and also has submodules, so where it acts cannot be read from its "
            "structure; register a converter for it"
        )
    if not children:
        yield prefix, module
        return
    for name, child in children:
        yield from _leaves(child, f"{prefix}.{name}" if prefix else name)


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _plan_from_module(model: nn.Module) -> list[_Layer]:
    plan: list[_Layer] = []
    for name, m in _leaves(model):
        label = f"'{name or type(m).__name__}' ({type(m).__name__})"
        params = [n for n, _ in m.named_parameters(recurse=False)]
        if isinstance(m, nn.Linear):
            plan.append(_Layer("linear", name, m.in_features, m.out_features, _join(name, "weight"),
                               _join(name, "bias") if m.bias is not None else None))
        elif isinstance(m, _CONVS):
            if m.groups != 1:
                raise UnsupportedModelError(
                    f"convolution {label} has groups={m.groups}: grouped/depthwise convolutions are not "
                    "supported (only groups=1)"
                )
            plan.append(_Layer("conv", name, m.in_channels, m.out_channels, _join(name, "weight"),
                               _join(name, "bias") if m.bias is not None else None,
                               spatial_dims=len(m.kernel_size)))
        elif isinstance(m, _BATCHNORMS):
            buffers = [_join(name, b) for b in ("running_mean", "running_var") if getattr(m, b, None) is not None]
            plan.append(_Layer("norm", name, m.num_features, m.num_features,
                               _join(name, "weight") if m.affine else None,
                               _join(name, "bias") if m.affine else None, buffers))
        elif isinstance(m, nn.LayerNorm):
            if len(m.normalized_shape) != 1:
                raise UnsupportedModelError(
                    f"layer norm {label} normalizes over {tuple(m.normalized_shape)}: only normalization over "
                    "the feature axis (a 1-D normalized_shape) is supported"
                )
            size = m.normalized_shape[0]
            plan.append(_Layer("norm", name, size, size,
                               _join(name, "weight") if m.weight is not None else None,
                               _join(name, "bias") if m.bias is not None else None, is_layer_norm=True))
        elif params:
            raise UnsupportedModelError(
                f"module {label} with parameter '{_join(name, params[0])}' is not supported by the "
                "sequential converter (supported layers: Linear, Conv1d/2d/3d, BatchNorm, LayerNorm)"
            )
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise UnsupportedModelError(f"{label}: only Flatten(start_dim=1, end_dim=-1) is supported")
            plan.append(_Layer("flatten", name))
        elif isinstance(m, _POOLS):
            plan.append(_Layer("global_pool" if _is_global(m) else "pool", name))
        elif type(m) in UNITWISE or isinstance(m, tuple(UNITWISE)):
            continue
        else:
            raise UnsupportedModelError(
                f"module {label} is not known to act unit-wise, so the sequential converter cannot place it; "
                "if it does (an activation, say), call neuralgraph.arch.sequential.register_unitwise("
                f"{type(m).__name__})"
            )
    return plan


def _plan_from_specs(source: ModelSource) -> list[_Layer]:
    plan: list[_Layer] = []
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for p in source.params:
        prefix, _, leaf = p.name.rpartition(".")
        modules.setdefault(prefix, {})[leaf] = p.shape
    for prefix, leaves in modules.items():
        unknown = sorted(set(leaves) - {"weight", "bias"})
        if unknown:
            raise UnsupportedModelError(
                f"parameter '{_join(prefix, unknown[0])}' is not a weight or bias of a Linear, Conv or norm "
                "layer; the sequential converter cannot place it"
            )
        if "weight" not in leaves:
            raise UnsupportedModelError(f"parameter '{_join(prefix, 'bias')}' has no weight beside it")
        w = leaves["weight"]
        bias = _join(prefix, "bias") if "bias" in leaves else None
        if len(w) == 2:
            plan.append(_Layer("linear", prefix, w[1], w[0], _join(prefix, "weight"), bias))
        elif 3 <= len(w) <= 5:
            plan.append(_Layer("conv", prefix, w[1], w[0], _join(prefix, "weight"), bias, spatial_dims=len(w) - 2))
        elif len(w) == 1:
            plan.append(_Layer("norm", prefix, w[0], w[0], _join(prefix, "weight"), bias))
        else:
            raise UnsupportedModelError(f"parameter '{_join(prefix, 'weight')}' with shape {w} cannot be placed")
        if bias is not None and leaves["bias"] != (w[0],):
            raise ParameterMismatchError(
                f"parameter '{bias}' has shape {leaves['bias']} but its layer has {w[0]} units"
            )
        if plan[-1].kind == "conv" and len(plan) > 1 and plan[-2].kind in ("linear",):
            raise UnsupportedModelError(f"convolution '{prefix}' follows a linear layer: not a chain this converter reads")
        if plan[-1].kind == "linear" and len(plan) > 1 and plan[-2].kind in ("conv", "norm"):
            # A shape list cannot show pooling; assume Flatten(+ pooling) between conv and linear.
            if any(layer.kind == "conv" for layer in plan[:-1]):
                plan.insert(len(plan) - 1, _Layer("flatten", f"{prefix}<flatten>"))
    return plan


def _spatial_flatten_error(layer: _Layer, width: int) -> UnsupportedModelError:
    return UnsupportedModelError(
        f"linear layer '{layer.name}' has {layer.size_in} inputs after a Flatten of {width} channels, so it "
        f"reads {layer.size_in // width} spatial positions per channel (spatial size > 1). A neural graph has "
        "one node per channel and cannot say which position each weight reads, so the graph would be wrong; "
        "pool to spatial size 1 before Flatten (e.g. nn.AdaptiveAvgPool2d(1))"
    )


def _declare(plan: list[_Layer], source: ModelSource) -> GraphBuilder:
    b = GraphBuilder(source.params, arch="sequential")
    unit_layers = [i for i, layer in enumerate(plan) if layer.kind in ("linear", "conv")]
    if not unit_layers:
        raise UnsupportedModelError("the model has no Linear or Conv layer: nothing to build a graph from")
    last = unit_layers[-1]
    units = None  # current node group
    spatial = False  # current activations have spatial axes
    pooled = False  # ... of size 1 (global pooling)
    flat_spatial = False  # a Flatten merged channels with unpooled spatial axes
    first_input = None
    for i, layer in enumerate(plan):
        where = f"layer '{layer.name}'"
        if layer.kind in ("linear", "conv", "norm"):
            if units is None:
                units = b.group("input", layer.size_in, role="input")
                spatial = layer.kind == "conv"
                first_input = ("conv", layer.size_in, layer.spatial_dims) if layer.kind == "conv" else ("vector", layer.size_in)
                if layer.kind == "norm":
                    first_input = ("vector", layer.size_in)
            width = units.size
            if layer.kind == "linear":
                if spatial:
                    raise UnsupportedModelError(
                        f"{where} (Linear) follows a convolution without Flatten: it would act on the last "
                        "spatial axis, not on channels"
                    )
                if flat_spatial and layer.size_in != width:
                    if layer.size_in % width == 0:
                        raise _spatial_flatten_error(layer, width)
                if layer.size_in != width:
                    raise ParameterMismatchError(f"{where} expects {layer.size_in} inputs but the previous layer has {width} units")
            elif layer.kind == "conv":
                if not spatial:
                    raise UnsupportedModelError(f"{where} (convolution) follows a layer without spatial axes")
                if layer.size_in != width:
                    raise ParameterMismatchError(f"{where} expects {layer.size_in} channels but the previous layer has {width}")
            else:  # norm acts on the current units
                if layer.size_in != width:
                    raise ParameterMismatchError(f"{where} normalizes {layer.size_in} units but the previous layer has {width}")
                if layer.is_layer_norm and spatial:
                    raise UnsupportedModelError(f"{where} (LayerNorm) would normalize a spatial axis of a convolution output")
                if layer.weight:
                    b.star(b.param(layer.weight), b.bias_node(layer.weight), units, et.NORM)
                if layer.bias:
                    b.star(b.param(layer.bias), b.bias_node(layer.bias), units, et.BIAS)
                for buf in layer.buffers:
                    b.unit_buffer(buf, units)
                continue
            bias_node = b.bias_node(layer.bias) if layer.bias else None
            role = "output" if i == last else "hidden"
            new = b.group(layer.name or "layer", layer.size_out, role=role)
            edge_type = et.CONV if layer.kind == "conv" else et.LINEAR
            b.dense(b.param(layer.weight), units, new, edge_type)
            if bias_node is not None:
                b.star(b.param(layer.bias), bias_node, new, et.BIAS)
            if role == "hidden":
                b.permutable(new)
            units = new
            spatial, pooled, flat_spatial = layer.kind == "conv", False, False
        elif layer.kind == "flatten":
            if spatial:
                flat_spatial = not pooled
                spatial = pooled = False
        elif layer.kind in ("pool", "global_pool"):
            if not spatial:
                raise UnsupportedModelError(
                    f"pooling '{layer.name}' acts on a layer without spatial axes: it would pool across units"
                )
            pooled = pooled or layer.kind == "global_pool"
    b.meta["input"] = first_input
    return b


def _inputs(model: nn.Module, graph, generator: torch.Generator, batch: int) -> tuple:
    """Random inputs for the verifier: vectors, or images/sequences of a size the model accepts."""
    kind = graph.meta.get("input")
    dtype = next(model.parameters()).dtype
    device = next(model.parameters()).device  # a model on the meta device is probed on meta tensors
    if kind is None:
        raise ValueError("the graph does not record the model's input; pass inputs= to verify")
    if kind[0] == "vector":
        return (torch.randn(batch, kind[1], generator=generator, dtype=dtype),)
    _, channels, dims = kind
    for size in (24, 32, 16, 12, 8, 6, 4, 3, 2, 1):
        x = torch.randn(batch, channels, *([size] * dims), generator=generator, dtype=dtype)
        try:
            with torch.no_grad():
                model(x.to(device))
        except (RuntimeError, ValueError):
            continue
        return (x,)
    raise ValueError("no input size in 1..32 runs through the model; pass inputs= to verify")


def _activation(rng: random.Random) -> nn.Module:
    return rng.choice([nn.ReLU, nn.Tanh, nn.GELU, nn.SiLU, nn.Identity, nn.Sigmoid])()


class _Chain(nn.Module):
    """A plain module whose submodules run in registration order (not an nn.Sequential)."""

    def __init__(self, layers: list[nn.Module]) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(f"layer{i}", layer)

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


def _mlp_layers(rng: random.Random) -> list[nn.Module]:
    layers: list[nn.Module] = []
    width = rng.randint(1, 6)
    for depth in range(rng.randint(1, 3)):
        out = rng.randint(2, 6)  # a one-unit bottleneck can make the model nearly constant
        layers.append(nn.Linear(width, out, bias=rng.random() < 0.8))
        layers.append(_activation(rng))
        r = rng.random()
        if r < 0.2 and out > 1:  # LayerNorm over one unit outputs a constant
            layers.append(nn.LayerNorm(out, bias=rng.random() < 0.5))
        elif r < 0.35:
            layers.append(nn.BatchNorm1d(out))
        width = out
    layers.append(nn.Linear(width, rng.randint(1, 5), bias=rng.random() < 0.8))
    return layers


def _conv_layers(rng: random.Random) -> list[nn.Module]:
    layers: list[nn.Module] = []
    dims = rng.choice([1, 2])
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    bn = nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d
    pool = nn.AdaptiveAvgPool1d if dims == 1 else nn.AdaptiveAvgPool2d
    width = rng.randint(1, 3)
    for depth in range(rng.randint(1, 3)):
        out = rng.randint(1, 6)
        kernel = rng.randint(1, 3)
        stride = rng.choice([1, 2]) if depth == 0 else 1
        padding = "same" if stride == 1 and rng.random() < 0.5 else 0
        layers.append(conv(width, out, kernel, stride=stride, padding=padding, bias=rng.random() < 0.8))
        if rng.random() < 0.3:
            layers.append(bn(out))
        layers.append(_activation(rng))
        width = out
    layers += [pool(1), nn.Flatten()]
    if rng.random() < 0.4:
        hidden = rng.randint(2, 6)  # as above: one saturating unit (e.g. Tanh) can make the model nearly constant
        layers += [nn.Linear(width, hidden), _activation(rng)]
        width = hidden
    layers.append(nn.Linear(width, rng.randint(1, 5), bias=rng.random() < 0.8))
    return layers


def _container(layers: list[nn.Module], rng: random.Random) -> nn.Module:
    """The layers in an ``nn.Sequential``, two nested ones, or a plain module that runs its
    children in order (:class:`_Chain`), drawn from ``rng``."""
    if rng.random() < 0.3 and len(layers) > 2:
        cut = rng.randint(1, len(layers) - 1)
        return nn.Sequential(nn.Sequential(*layers[:cut]), _Chain(layers[cut:]))
    return _Chain(layers) if rng.random() < 0.3 else nn.Sequential(*layers)


def sample_model(rng: random.Random) -> nn.Module:
    """A random small MLP or convnet (the registry's example for the property tests)."""
    layers = _mlp_layers(rng) if rng.random() < 0.5 else _conv_layers(rng)
    return _container(layers, rng)


def sample_mlp(rng: random.Random) -> nn.Module:
    """A random small MLP: Linear layers, activations, LayerNorm / BatchNorm1d."""
    return _container(_mlp_layers(rng), rng)


def sample_convnet(rng: random.Random) -> nn.Module:
    """A random small 1-D or 2-D convnet with global pooling and a linear head."""
    return _container(_conv_layers(rng), rng)


@register(
    "sequential",
    aliases=("mlp", "convnet"),
    modules=(nn.Sequential,),
    accepts_specs=True,
    example=sample_model,
    example_inputs=_inputs,
    description="MLPs and convnets: Linear, Conv1d/2d/3d, BatchNorm, LayerNorm, pooling, in registration order",
)
def convert_sequential(source: ModelSource, *, naive: bool = False) -> GraphBuilder:
    """MLPs and convnets read as a chain of layers (``naive`` has no effect: no attention)."""
    plan = _plan_from_module(source.module) if source.module is not None else _plan_from_specs(source)
    return _declare(plan, source)
