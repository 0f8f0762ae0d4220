import dataclasses
import random
import re
from collections import OrderedDict

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

import neuralgraph as ng
import neuralgraph.build as ngb
from neuralgraph import edge_types as et

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()

import neuralgraph.arch.vit  # noqa: E402  (registers)
from neuralgraph.arch.vit import sample_vit  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models: one intra-op thread is fastest, and much faster on a loaded machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**overrides):
    cfg = dict(
        hidden_size=6, num_hidden_layers=2, num_attention_heads=2, intermediate_size=5, image_size=4,
        patch_size=2, num_channels=3, num_labels=3, attn_implementation="eager",
    )
    cfg.update(overrides)
    return transformers.ViTConfig(**cfg)


def classifier(**overrides):
    return transformers.ViTForImageClassification(config(**overrides)).eval()


def specs(model):
    return [(n, tuple(p.shape)) for n, p in model.named_parameters()]


def permutable_groups(graph):
    return {name for s in graph.symmetries for name in s.groups}


def bad_kinds(report):
    seen = set()
    for c in report.checks:
        if c.kind != "bad":
            continue
        assert c.passed, c
        if c.description.startswith("move one unit") and any(g.endswith(".qk") for g in c.groups):
            seen.add("qk across heads")
        if re.search(r"except the dst side of block '[^']*(q_proj\.weight|in_proj_weight\.q)'", c.description):
            seen.add("queries without keys")
        if re.search(r"except the src side of block '[^']*(k_proj\.weight|in_proj_weight\.k)'", c.description):
            seen.add("keys without queries")
    return seen


# ------------------------------------------------------------------ a torchvision-style ViT
# torchvision is not installed here: a minimal network with torchvision's parameter names and
# computation (pre-LayerNorm blocks, nn.MultiheadAttention, [CLS] first, head on [CLS]).
class Block(nn.Module):
    def __init__(self, width, heads, mlp, eps):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width, eps=eps)
        self.self_attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width, eps=eps)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, width), nn.Dropout(0.0))

    def forward(self, x):
        y = self.ln_1(x)
        x = x + self.self_attention(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(self, seq, width, heads, mlp, layers, eps):
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.randn(1, seq, width))
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", Block(width, heads, mlp, eps)) for i in range(layers)))
        self.ln = nn.LayerNorm(width, eps=eps)

    def forward(self, x):
        return self.ln(self.layers(x + self.pos_embedding))


class TorchvisionStyleViT(nn.Module):
    def __init__(self, image=4, patch=2, channels=3, width=6, heads=2, mlp=5, layers=2, classes=3,
                 pre_logits=None, eps=1e-6):
        super().__init__()
        self.conv_proj = nn.Conv2d(channels, width, patch, stride=patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, width))
        self.encoder = Encoder((image // patch) ** 2 + 1, width, heads, mlp, layers, eps)
        head = OrderedDict()
        if pre_logits:
            head["pre_logits"] = nn.Linear(width, pre_logits)
            head["act"] = nn.Tanh()
        head["head"] = nn.Linear(pre_logits or width, classes)
        self.heads = nn.Sequential(head)

    def forward(self, pixels):
        x = self.conv_proj(pixels).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


def torchvision_state(hf):
    """The HF classifier's parameters under torchvision's names and layout, in torchvision's order."""
    p = dict(hf.named_parameters())
    out = OrderedDict()
    out["class_token"] = p["vit.embeddings.cls_token"]
    out["conv_proj.weight"] = p["vit.embeddings.patch_embeddings.projection.weight"]
    out["conv_proj.bias"] = p["vit.embeddings.patch_embeddings.projection.bias"]
    out["encoder.pos_embedding"] = p["vit.embeddings.position_embeddings"]
    for i in range(hf.config.num_hidden_layers):
        h, t = f"vit.layers.{i}.", f"encoder.layers.encoder_layer_{i}."
        out[t + "ln_1.weight"] = p[h + "layernorm_before.weight"]
        out[t + "ln_1.bias"] = p[h + "layernorm_before.bias"]
        out[t + "self_attention.in_proj_weight"] = torch.cat([p[h + f"attention.{c}_proj.weight"] for c in "qkv"])
        out[t + "self_attention.in_proj_bias"] = torch.cat([p[h + f"attention.{c}_proj.bias"] for c in "qkv"])
        out[t + "self_attention.out_proj.weight"] = p[h + "attention.o_proj.weight"]
        out[t + "self_attention.out_proj.bias"] = p[h + "attention.o_proj.bias"]
        out[t + "ln_2.weight"] = p[h + "layernorm_after.weight"]
        out[t + "ln_2.bias"] = p[h + "layernorm_after.bias"]
        for a, b in (("mlp.0", "mlp.fc1"), ("mlp.3", "mlp.fc2")):
            out[t + a + ".weight"] = p[h + b + ".weight"]
            out[t + a + ".bias"] = p[h + b + ".bias"]
    out["encoder.ln.weight"] = p["vit.layernorm.weight"]
    out["encoder.ln.bias"] = p["vit.layernorm.bias"]
    out["heads.head.weight"] = p["classifier.weight"]
    out["heads.head.bias"] = p["classifier.bias"]
    return out


def pixels(n=4, channels=3, size=4, seed=0):
    return torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ------------------------------------------------------------------ verification
@given(seed=st.integers(0, 2**32 - 1))
def test_verifier_passes_on_random_configs(seed):
    model = sample_vit(random.Random(seed))
    report = ng.verify(model, arch="vit", trials=2, seed=seed % 997)
    assert report, str(report)
    assert all(c.isomorphic for c in report.checks if c.kind == "good")
    assert all(c.isomorphic is False for c in report.checks if c.kind == "bad")
    if model.config.num_attention_heads > 1:
        assert "qk across heads" in bad_kinds(report)


@pytest.mark.parametrize(
    "kind", ["classifier", "classifier_no_bias", "classifier_identity", "model", "model_nopool", "head_dim"]
)
def test_each_class_declares_what_its_function_has(kind):
    if kind == "model":
        model = transformers.ViTModel(config(pooler_output_size=4)).eval()
    elif kind == "model_nopool":
        model = transformers.ViTModel(config(), add_pooling_layer=False).eval()
    elif kind == "classifier_no_bias":
        model = classifier(qkv_bias=False)
    elif kind == "classifier_identity":
        model = classifier(num_labels=0)  # the classifier is an identity: the output is the stream
    elif kind == "head_dim":
        model = classifier(head_dim=4)  # 8 query-key units per layer, stream of 6
    else:
        model = classifier()
    g = ng.convert(model)
    groups = permutable_groups(g)
    assert ("stream.0" in groups) == (kind in ("classifier", "classifier_no_bias", "head_dim"))
    assert g.block(next(b.name for b in g.blocks if b.name.endswith("projection.weight"))).feat_size == 4  # 2x2 kernel
    assert g.max_feat_size == 4 and g.edge_type_counts()[et.CONV] == 3 * 6
    assert g.group("positions").size == 5 and g.group("channels").role == "input"
    cls_block = next(b for b in g.blocks if b.name.endswith("cls_token"))
    assert cls_block.kind == "star" and cls_block.dst.group == "stream.0" and cls_block.edge_type == et.BIAS
    if kind == "model":
        assert g.group("pooler").role == "output" and g.group("pooler").size == 4 and "pooler" not in groups
    if kind == "head_dim":
        assert g.group("vit.layers.0.attention.qk").size == 8
    report = ng.verify(model, g, trials=3)
    assert report, str(report)
    assert {"qk across heads", "queries without keys", "keys without queries"} <= bad_kinds(report)


def test_claiming_the_stream_of_vitmodel_permutable_fails():
    model = transformers.ViTModel(config(), add_pooling_layer=False).eval()
    g = ng.convert(model, lpe=0)
    wrong = ngb.Permutable(tuple(x.name for x in g.groups if x.name.startswith("stream.")))
    report = ng.verify(model, dataclasses.replace(g, symmetries=g.symmetries + (wrong,)), trials=2)
    assert not report and any(f.kind == "good" for f in report.failures)


def test_naive_graph_confuses_heads_only():
    # without q/k/v biases: with them, the naive graph's stacked [b_q, b_k, b_v] edge also lets the
    # verifier leave the (ineffective) key slot alone, see test_bert.py's naive test
    model = classifier(hidden_size=8, qkv_bias=False)
    naive = ng.convert(model, naive=True)
    assert not any(g.role == "head" for g in naive.groups)
    assert naive.block("vit.layers.0.attention.qkv").feat_size == 3
    report = ng.verify(model, naive, trials=3)
    assert not report
    assert {f.description.split(" ")[0] for f in report.failures} == {"move"}  # only cross-head moves
    assert all(f.isomorphic for f in report.failures)  # the naive graph cannot see them


# ------------------------------------------------------------------ round trip
@given(seed=st.integers(0, 2**32 - 1), steps=st.integers(2, 4), naive=st.booleans())
def test_roundtrip_is_exact(seed, steps, naive):
    model = sample_vit(random.Random(seed))
    g = ng.convert(model, naive=naive, lpe=0)
    theta = ng.flatten_params(model)
    assert torch.equal(g.to_params(g.edge_features(theta)), theta)
    states = torch.stack([theta * (t + 1) - t for t in range(steps)], dim=1)
    feats = g.edge_features(states)
    for t in range(steps):
        assert torch.equal(g.to_params(feats, state=t), states[:, t])


# ------------------------------------------------------------------ torchvision-style shape lists
@pytest.mark.parametrize("naive", [False, True])
def test_torchvision_list_has_the_hf_structure(naive):
    hf = classifier(num_hidden_layers=2)
    state = torchvision_state(hf)
    listed = [(n, tuple(t.shape)) for n, t in state.items()]
    tv = ng.convert(listed, arch="vit", config={"num_heads": 2}, naive=naive)
    ref = ng.convert(hf, naive=naive)
    assert tv.num_nodes == ref.num_nodes
    assert torch.equal(tv.edge_index, ref.edge_index) and torch.equal(tv.edge_type, ref.edge_type)
    assert torch.equal(tv.pos_w, ref.pos_w) and torch.equal(tv.pos, ref.pos)
    def symmetries(g):  # by node ranges: group names follow each scheme's module names
        return [(type(s).__name__, s.segments, [(g.group(n).start, g.group(n).size) for n in s.groups])
                for s in g.symmetries]

    assert symmetries(tv) == symmetries(ref)
    # mapped by role, the same values land on the same edges
    theta_tv = torch.cat([t.detach().reshape(-1) for t in state.values()])
    assert torch.equal(tv.edge_features(theta_tv), ref.edge_features(ng.flatten_params(hf)))
    # exact round trip, one state and a stack
    assert torch.equal(tv.to_params(tv.edge_features(theta_tv)), theta_tv)
    stack = torch.stack([theta_tv, 2 * theta_tv - 1, -theta_tv], dim=1)
    feats = tv.edge_features(stack)
    assert all(torch.equal(tv.to_params(feats, state=t), stack[:, t]) for t in range(3))


def test_torchvision_style_module_computes_the_hf_function_and_verifies():
    hf = classifier(layer_norm_eps=1e-6).double()
    tv = TorchvisionStyleViT(eps=1e-6).double().eval()
    assert [n for n, _ in tv.named_parameters()] == list(torchvision_state(hf))
    ng.load_params(tv, torch.cat([t.detach().reshape(-1) for t in torchvision_state(hf).values()]))
    with torch.no_grad():
        assert torch.allclose(tv(pixels()), hf(pixel_values=pixels(), return_dict=False)[0], atol=1e-12)
    g = ng.convert(specs(tv), arch="vit", config={"num_heads": 2})
    report = ng.verify(tv, g, trials=3, inputs=(pixels(8),))
    assert report, str(report)
    assert {"qk across heads", "queries without keys", "keys without queries"} <= bad_kinds(report)


def test_torchvision_pre_logits_units_are_permutable():
    tv = TorchvisionStyleViT(pre_logits=4, layers=1).double().eval()
    g = ng.convert(specs(tv), arch="vit", config={"num_heads": 2})
    assert "heads.pre_logits" in permutable_groups(g) and g.group("heads.pre_logits").role == "hidden"
    assert ng.verify(tv, g, trials=3, inputs=(pixels(8),))


def test_transformers4_names_give_the_same_graph():
    hf = classifier()
    rename = {"layers.": "encoder.layer.", "attention.q_proj": "attention.attention.query",
              "attention.k_proj": "attention.attention.key", "attention.v_proj": "attention.attention.value",
              "attention.o_proj": "attention.output.dense", "mlp.fc1": "intermediate.dense", "mlp.fc2": "output.dense"}
    old = []
    for n, s in specs(hf):
        for a, b in rename.items():
            n = n.replace(a, b)
        old.append((n, s))
    g = ng.convert(old, arch="vit", config={"num_attention_heads": 2}, lpe=0)
    ref = ng.convert(hf, lpe=0)
    assert torch.equal(g.edge_index, ref.edge_index) and torch.equal(g.edge_type, ref.edge_type)


# ------------------------------------------------------------------ bad input
def test_missing_heads_in_config():
    listed = [(n, tuple(t.shape)) for n, t in torchvision_state(classifier()).items()]
    with pytest.raises(ng.UnsupportedModelError, match=r"number of attention heads is not known.*'num_heads'"):
        ng.convert(listed, arch="vit")
    with pytest.raises(ng.UnsupportedModelError, match="do not split into 4 heads"):
        ng.convert(listed, arch="vit", config={"num_heads": 4})


def test_wrong_fused_projection_is_named():
    listed = [(n, (12, 6) if n.endswith("encoder_layer_1.self_attention.in_proj_weight") else tuple(t.shape))
              for n, t in torchvision_state(classifier()).items()]
    with pytest.raises(ng.ParameterMismatchError, match=r"'encoder\.layers\.encoder_layer_1\.self_attention\.in_proj_weight' has shape \(12, 6\), expected \(18, 6\)"):
        ng.convert(listed, arch="vit", config={"num_heads": 2})


def test_missing_parameter_is_named():
    listed = [(n, tuple(t.shape)) for n, t in torchvision_state(classifier()).items() if n != "encoder.pos_embedding"]
    with pytest.raises(ng.ParameterMismatchError, match=r"no parameter 'encoder\.pos_embedding' \(position embedding\)"):
        ng.convert(listed, arch="vit", config={"num_heads": 2})


def test_conv_stem_is_refused_by_name():
    listed = [(n, tuple(t.shape)) for n, t in torchvision_state(classifier()).items()]
    listed.insert(1, ("conv_proj.conv_bn_relu_0.weight", (4, 3, 3, 3)))
    with pytest.raises(ng.UnsupportedModelError, match=r"parameter 'conv_proj\.conv_bn_relu_0\.weight' is not part of"):
        ng.convert(listed, arch="vit", config={"num_heads": 2})


def test_unsupported_classes_are_named():
    # the hand-written layout names what it cannot place ...
    with pytest.raises(ng.UnsupportedModelError, match="ViTForMaskedImageModeling is not supported"):
        ng.convert(transformers.ViTForMaskedImageModeling(config(encoder_stride=2)), arch="vit")
    with pytest.raises(ng.UnsupportedModelError, match=r"parameter 'embeddings\.mask_token' is not part of"):
        ng.convert(transformers.ViTModel(config(), use_mask_token=True), arch="vit")


def test_mask_token_models_are_traced_with_masked_patches():
    # ... and by default the traced converter takes them, masking some patches so the token counts
    for model in (transformers.ViTForMaskedImageModeling(config(encoder_stride=2)),
                  transformers.ViTModel(config(), use_mask_token=True)):
        model.eval()
        graph = ng.convert(model, lpe=0)
        assert graph.meta["converter"] == "traced"
        assert "bool_masked_pos" in graph.meta["example_inputs"]
        assert ng.verify(model, graph, trials=2)
