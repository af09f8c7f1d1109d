"""Compression on scikit-learn's digits (1797 8x8 images, shipped with scikit-learn):

1. ``compress.GradualPruner`` to 90% sparsity against one-shot pruning to 90%, with the same fine-tuning budget
   (same epochs, optimizer and learning rate after the same dense training), 5 seeds, mean and std of the test
   accuracy.
2. A digits CNN with ``Int8Conv2d`` (``compress.quantize(include=[nn.Conv2d, nn.Linear])``): test accuracy against
   fp32 and the latency of the whole model at batch 64.
3. Weight quantization scales at 4 bits (one scale per output channel) on the digits MLP: absmax, mse and fisher
   (label-free output sensitivity, and the labels' cross-entropy), 5 seeds.

Run: ``python examples/digits_compress.py [--threads 2] [--tier avx2] [--part 1 2 3]``.
"""
from __future__ import annotations

import copy
import statistics

from minilm_common import example_parser, latencies


def cnn():
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, 10))


def images(data):
    x_tr, y_tr, x_te, y_te = data
    return x_tr.reshape(-1, 1, 8, 8), y_tr, x_te.reshape(-1, 1, 8, 8), y_te


def gradual_vs_one_shot(hidden=256, seeds=(0, 1, 2, 3, 4), sparsity=0.9, dense_epochs=20,
                        finetune_epochs=20) -> None:
    import torch

    import fastdistill as fd
    from fastdistill import demo

    steps_per_epoch = None
    results = {"one-shot": [], "gradual (cubic)": []}
    for seed in seeds:
        data = demo.load_digits_split(seed)
        torch.manual_seed(seed)
        dense = demo.mlp(hidden)
        demo.train_alone(dense, demo.digits_loader(data[0], data[1], seed), dense_epochs, lr=3e-3)
        steps_per_epoch = len(demo.digits_loader(data[0], data[1], seed))
        total = finetune_epochs * steps_per_epoch
        for name in results:
            model = copy.deepcopy(dense)
            if name == "one-shot":
                fd.compress.prune(model, sparsity)
                pruner = None
            else:  # the schedule ends at 2/3 of the fine-tuning, which then goes on at the final sparsity
                pruner = fd.compress.GradualPruner(model, sparsity, start=0, end=2 * total // 3,
                                                   every=max(1, steps_per_epoch // 2))
            demo.train_alone(model, demo.digits_loader(data[0], data[1], seed + 100), finetune_epochs, lr=1e-3)
            if pruner is not None:
                pruner.remove()
            assert abs(fd.compress.sparsity(model)["total"] - sparsity) < 0.01
            results[name].append(demo.accuracy(model, data[2], data[3]))
    print(f"\n1. digits MLP 64-{hidden}-{hidden}-10 pruned to {sparsity:.0%}, {finetune_epochs} fine-tuning epochs "
          f"({finetune_epochs * steps_per_epoch} steps) after {dense_epochs} dense epochs, seeds {list(seeds)}")
    print("| method | test accuracy mean | std | per seed |")
    print("|---|---|---|---|")
    for name, accs in results.items():
        print(f"| {name} | {statistics.mean(accs):.4f} | {statistics.stdev(accs):.4f} | "
              f"{', '.join(f'{a:.3f}' for a in accs)} |")


def train_cnn(seed=0, epochs=15):
    import torch

    from fastdistill import demo

    data = images(demo.load_digits_split(seed))
    torch.manual_seed(seed)
    model = cnn()
    demo.train_alone(model, demo.digits_loader(data[0], data[1], seed), epochs, lr=3e-3)
    return model.eval(), data


def int8_cnn(threads: int, clock: str) -> None:
    import torch
    from torch import nn

    import fastdistill as fd
    from fastdistill import demo

    model, data = train_cnn()
    q = fd.compress.quantize(model, include=[nn.Conv2d, nn.Linear])
    fp32, int8 = demo.accuracy(model, data[2], data[3]), demo.accuracy(q, data[2], data[3])
    x = data[2][:64]
    with torch.no_grad():
        t = latencies({"fp32": lambda: model(x), "int8": lambda: q(x)}, rounds=9, calls=9,
                      clock=clock)
    print(f"\n2. digits CNN (3 conv + 2 linear), {threads} threads: test accuracy fp32 {fp32:.4f}, Int8Conv2d + "
          f"Int8Linear {int8:.4f} ({100 * (int8 - fp32):+.2f} points); batch 64: fp32 {t['fp32']:.3f} ms, int8 "
          f"{t['int8']:.3f} ms ({t['fp32'] / t['int8']:.2f}x faster)")


def scale_methods(seeds=(0, 1, 2, 3, 4)) -> None:
    import torch
    import torch.nn.functional as F

    import fastdistill as fd
    from fastdistill import demo

    runs = ["absmax", "mse", "fisher (output sensitivity, no labels)", "fisher (cross-entropy on the labels)"]
    accs = {name: [] for name in ["fp32"] + runs}
    for seed in seeds:
        data = demo.load_digits_split(seed)
        torch.manual_seed(seed)
        model = demo.mlp(256)
        demo.train_alone(model, demo.digits_loader(data[0], data[1], seed), 20, lr=3e-3)
        accs["fp32"].append(demo.accuracy(model, data[2], data[3]))
        calib = [data[0][i:i + 64] for i in range(0, 512, 64)]
        labels = [data[1][i:i + 64] for i in range(0, 512, 64)]
        for name in runs:
            kwargs = {}
            if name.startswith("fisher"):
                kwargs["calibration"] = calib
            if "labels" in name:
                kwargs.update(loss_fn=F.cross_entropy, targets=labels)
            q = fd.compress.quantize(model, bits=4, group_size=256, scale_method=name.split()[0], **kwargs)
            accs[name].append(demo.accuracy(q, data[2], data[3]))
    print(f"\n3. digits MLP 64-256-256-10, weights at 4 bits with one scale per output channel (a hard setting), "
          f"seeds {list(seeds)}; fisher from 512 training images")
    print("| weights | test accuracy mean | std |")
    print("|---|---|---|")
    for name, values in accs.items():
        print(f"| {name} | {statistics.mean(values):.4f} | {statistics.stdev(values):.4f} |")


def main() -> None:
    parser = example_parser()
    parser.add_argument("--part", type=int, nargs="*", default=[1, 2, 3])
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    print(f"digits, {args.threads} threads, tier {args.tier}")
    if 1 in args.part:
        gradual_vs_one_shot(256)
        gradual_vs_one_shot(64)
    if 2 in args.part:
        int8_cnn(args.threads, args.clock)
    if 3 in args.part:
        scale_methods()


if __name__ == "__main__":
    main()
