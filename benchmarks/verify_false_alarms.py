"""How often does ``neuralgraph.verify`` reject a correct graph? (its false-alarm rate)

For each converter, ``--seeds`` tiny models with a configuration drawn from the seed (widths, heads,
key/value heads, biases, depth, task head) are converted and verified with that seed. Every graph a
hand-written converter or the traced converter returns is correct, so every failed report is a
false alarm. The table also shows the margin the verifier had: the smallest bad-permutation change
over its threshold (how far the closest bad permutation was from being missed) and the worst good
deviation (the model's own round-off).

    python benchmarks/verify_false_alarms.py                 # 100 seeds per converter
    python benchmarks/verify_false_alarms.py --seeds 10 --only llama,gpt2
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import torch
from torch import nn

import neuralgraph
from neuralgraph.cli_args import ArgumentParser, positive_int


def _sequential(r: random.Random) -> nn.Module:
    if r.random() < 0.5:
        sizes = [r.randint(2, 9) for _ in range(r.randint(2, 5))]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += ([r.choice([nn.ReLU(), nn.Tanh(), nn.GELU()])] if i else []) + [nn.Linear(a, b, bias=r.random() < 0.8)]
        return nn.Sequential(*layers)
    c = [r.randint(2, 6) for _ in range(3)]
    layers = [nn.Conv2d(1, c[0], 3, padding=1), nn.ReLU()]
    if r.random() < 0.5:
        layers.insert(1, nn.BatchNorm2d(c[0]))
    layers += [nn.Conv2d(c[0], c[1], 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c[1], c[2])]
    return nn.Sequential(*layers)


def _heads(r: random.Random) -> tuple[int, int]:
    heads = r.choice([1, 2, 4])
    return heads, heads * r.choice([2, 4])


def _gpt2(r: random.Random) -> nn.Module:
    import transformers

    heads, width = _heads(r)
    config = transformers.GPT2Config(n_embd=width, n_head=heads, n_layer=r.randint(1, 2), vocab_size=r.randint(8, 20),
                                     n_positions=8, attn_implementation="eager")
    return (transformers.GPT2LMHeadModel if r.random() < 0.5 else transformers.GPT2Model)(config).eval()


def _llama(r: random.Random) -> nn.Module:
    import transformers

    heads = r.choice([2, 4, 8])
    kv = r.choice([k for k in (1, 2, 4, 8) if heads % k == 0])
    config = transformers.LlamaConfig(
        hidden_size=heads * r.choice([2, 4, 8]), num_attention_heads=heads, num_key_value_heads=kv,
        intermediate_size=r.randint(4, 24), num_hidden_layers=r.randint(1, 2), vocab_size=r.randint(8, 20),
        max_position_embeddings=16, attention_bias=r.random() < 0.5, mlp_bias=r.random() < 0.5,
        tie_word_embeddings=r.random() < 0.3, attn_implementation="eager")
    return (transformers.LlamaForCausalLM if r.random() < 0.5 else transformers.LlamaModel)(config).eval()


def _bert(r: random.Random) -> nn.Module:
    import transformers

    heads, width = _heads(r)
    config = transformers.BertConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=r.randint(3, 16),
                                     num_hidden_layers=r.randint(1, 2), vocab_size=r.randint(8, 20),
                                     max_position_embeddings=8, type_vocab_size=2, num_labels=3, attn_implementation="eager")
    cls = r.choice([transformers.BertModel, transformers.BertForMaskedLM, transformers.BertForSequenceClassification])
    return cls(config).eval()


def _vit(r: random.Random) -> nn.Module:
    import transformers

    heads, width = _heads(r)
    config = transformers.ViTConfig(hidden_size=width, num_attention_heads=heads, intermediate_size=r.randint(3, 16),
                                    num_hidden_layers=r.randint(1, 2), image_size=8, patch_size=r.choice([2, 4]),
                                    num_channels=r.choice([1, 3]), num_labels=3, attn_implementation="eager")
    return (transformers.ViTForImageClassification if r.random() < 0.5 else transformers.ViTModel)(config).eval()


def _nanogpt(r: random.Random) -> nn.Module:
    from neuralgraph.models import nanogpt as N

    heads, width = _heads(r)
    return N.GPT(N.GPTConfig(block_size=6, vocab_size=r.randint(5, 12), n_layer=r.randint(1, 2), n_head=heads,
                             n_embd=width, bias=r.random() < 0.7)).eval()


def _modded(r: random.Random) -> nn.Module:
    from neuralgraph.models import modded_nanogpt as M

    layers, heads, head_dim = r.randint(2, 3), r.choice([1, 2]), r.choice([4, 8])
    return M.GPT(M.GPTConfig(vocab_size=r.randint(5, 12), num_layers=layers, num_heads=heads,
                             model_dim=heads * head_dim, max_seq_len=5, head_dim=head_dim,
                             num_value_embeds=1, vocab_multiple=4, skip_attention=(r.randrange(layers),))).eval()


def _traced(r: random.Random) -> nn.Module:
    """A Hugging Face family without a hand-written converter, drawn from a few."""
    import transformers

    heads = r.choice([2, 4])
    width = heads * r.choice([4, 8])
    common = dict(hidden_size=width, num_attention_heads=heads, intermediate_size=r.randint(4, 24),
                  num_hidden_layers=r.randint(1, 2), vocab_size=r.randint(8, 20), max_position_embeddings=16)
    family = r.choice(["gpt_neox", "qwen3", "phi", "olmo2"])
    if family == "gpt_neox":
        config = transformers.GPTNeoXConfig(**common, use_parallel_residual=r.random() < 0.5)
    elif family == "qwen3":
        config = transformers.Qwen3Config(**common, num_key_value_heads=r.choice([1, heads]), head_dim=width // heads)
    elif family == "phi":
        config = transformers.PhiConfig(**common, partial_rotary_factor=0.5)
    else:
        config = transformers.Olmo2Config(**common, num_key_value_heads=r.choice([1, heads]))
    config._attn_implementation = "eager"
    return transformers.AutoModelForCausalLM.from_config(config).eval()


#: converter name -> a tiny model of its kind drawn from a seeded random source
FACTORIES: dict[str, Callable[[random.Random], nn.Module]] = {
    "sequential": _sequential, "gpt2": _gpt2, "llama": _llama, "bert": _bert, "vit": _vit,
    "nanogpt": _nanogpt, "modded_nanogpt": _modded, "traced": _traced,
}


def one(converter: str, seed: int) -> dict:
    """Verify the ``seed``-th random model of ``converter``; the outcome and margins."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = FACTORIES[converter](random.Random(f"{converter}-{seed}"))
    start = time.perf_counter()
    report = neuralgraph.verify(model, seed=seed, arch="traced" if converter == "traced" else None)
    return {
        "converter": converter, "seed": seed, "passed": bool(report), "seconds": time.perf_counter() - start,
        "good": report.worst_good_deviation, "margin": report.smallest_bad_deviation / max(report.change_threshold, 1e-300),
        "failures": [f"{c.kind}: {c.description} {c.detail}" for c in report.failures][:3],
    }


def table(rows: list[dict], converters: list[str]) -> str:
    lines = ["| converter | models | false alarms | rate | worst good deviation | smallest bad / threshold | s per model |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in converters:
        mine = [r for r in rows if r["converter"] == name]
        if not mine:
            continue
        alarms = sum(not r["passed"] for r in mine)
        margins = [r["margin"] for r in mine if not math.isnan(r["margin"])]
        goods = [r["good"] for r in mine if not math.isnan(r["good"])]
        lines.append(
            f"| {name} | {len(mine)} | {alarms} | {alarms / len(mine):.0%} | {max(goods, default=math.nan):.1e} | "
            f"{min(margins, default=math.nan):.1f}x | {sum(r['seconds'] for r in mine) / len(mine):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=positive_int, default=100, help="models per converter (default 100)")
    p.add_argument("--only", default=None, help=f"comma-separated converters (default all: {', '.join(FACTORIES)})")
    p.add_argument("--jobs", type=positive_int, default=1, help="worker processes (default 1)")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(FACTORIES)
    unknown = sorted(set(names) - set(FACTORIES))
    if unknown:
        p.error(f"unknown converter(s) {', '.join(unknown)}; known: {', '.join(FACTORIES)}")
    work = [(n, s) for n in names for s in range(args.seeds)]
    rows = []
    with ProcessPoolExecutor(args.jobs) as pool:
        for i, row in enumerate(pool.map(one, *zip(*work)), 1):
            rows.append(row)
            if not row["passed"]:
                print(f"  false alarm: {row['converter']} seed {row['seed']}: {row['failures']}", flush=True)
            print(f"\r[{i}/{len(work)}] {row['converter']} seed {row['seed']}", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(f"torch {torch.__version__}; {args.seeds} seeds per converter\n")
    print(table(rows, names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
