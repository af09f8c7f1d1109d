"""The Distiller: losses by name against the functions they name, batch formats, modes, feature distillation,
callbacks, schedules, checkpoints (resume bit for bit), errors."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fastdistill as fd
from fastdistill import compress
from fastdistill.distill import (LOSSES, Callback, Distiller, EarlyStopping, GradualPruning, QuantizationAware,
                                 SparseKDLoss, shrink)

D_IN, CLASSES = 12, 7


def mlp(hidden: int, dropout: float = 0.0) -> nn.Sequential:
    return nn.Sequential(nn.Linear(D_IN, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, CLASSES))


def data(n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D_IN, generator=g)
    y = (x[:, :CLASSES] + 0.3 * torch.randn(n, CLASSES, generator=g)).argmax(1)
    return x, y


def models(seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    return mlp(48), mlp(16, dropout)


def loader(x, y=None, batch_size=16, shuffle=True, generator=None):
    ds = TensorDataset(x) if y is None else TensorDataset(x, y)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=generator)


# ---------------------------------------------------------------------------------------------------- losses


@pytest.mark.parametrize("name", ["entropy", "info_entropy", "jsd", "reverse_kl", "entropy_sparse", "cosine", "mse"])
def test_named_losses_are_the_functions_they_name(name):
    teacher, student = models()
    x, y = data(16)
    d = Distiller(teacher, student, loss=name)
    loss, terms = d.compute_loss((x, y))
    s, t = student(x), teacher(x).detach()
    kw = dict(temperature=4.0, alpha=0.5)
    want = {
        "entropy": lambda: fd.kd_loss(s, t, y, **kw),
        "info_entropy": lambda: fd.kd_loss(s, t, y, weighting="info_entropy", **kw),
        "jsd": lambda: fd.kd_loss(s, t, y, divergence="jsd", **kw),
        "reverse_kl": lambda: fd.kd_loss(s, t, y, divergence="reverse_kl", **kw),
        "entropy_sparse": lambda: fd.sparse_kd_loss(
            s, *reversed(torch.log_softmax(t / 4.0, -1).topk(CLASSES)), y, values="log_probs", tail="bucket", **kw),
        "cosine": lambda: (1 - F.cosine_similarity(s, t, dim=-1)).mean(),
        "mse": lambda: (s - t).pow(2).mean(),
    }[name]()
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-6)
    assert set(terms) == {"loss", "distill"} and float(terms["loss"]) == float(loss.detach())
    assert name in LOSSES


def test_default_loss_is_kdloss_t4_alpha_half():
    d = Distiller(*models())
    assert isinstance(d.loss, fd.nn.KDLoss) and d.loss.temperature == 4.0 and d.loss.alpha == 0.5


def test_sparse_loss_with_all_entries_is_the_dense_loss():
    s, t, y = torch.randn(8, 30), torch.randn(8, 30), torch.randint(0, 30, (8,))
    got = SparseKDLoss(temperature=2.0, alpha=0.3, top_k=30)(s, t, y)
    torch.testing.assert_close(got, fd.kd_loss(s, t, y, temperature=2.0, alpha=0.3), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- batches


class HFStyle(nn.Module):
    """A model called as model(**batch) that returns an object with .logits (as Hugging Face models do)."""

    class Output(dict):
        def __getattr__(self, name):
            return self[name]

    def __init__(self, hidden: int):
        super().__init__()
        self.body = mlp(hidden)

    def forward(self, input_values, attention_mask=None):
        return self.Output(logits=self.body(input_values), hidden=input_values)


def test_batch_formats_give_the_same_loss():
    teacher, student = models()
    x, y = data(16)
    d = Distiller(teacher, student)
    want = d.compute_loss((x, y))[0]
    torch.testing.assert_close(d.compute_loss([x, y])[0], want)
    hf = Distiller(HFStyle(48), HFStyle(16))
    hf.teacher.body.load_state_dict(teacher.state_dict())
    hf.student.body.load_state_dict(student.state_dict())
    torch.testing.assert_close(hf.compute_loss({"input_values": x, "labels": y})[0], want)
    # without labels: the distillation term only, at the loss's alpha
    no_labels = d.compute_loss(x)[0]
    torch.testing.assert_close(d.compute_loss((x,))[0], no_labels)
    torch.testing.assert_close(no_labels, fd.kd_loss(student(x), teacher(x), temperature=4.0, alpha=0.5))
    with pytest.raises(ValueError, match="batch"):
        d.compute_loss((x, y, y))
    with pytest.raises(TypeError, match="batch"):
        d.compute_loss(3)


def test_evaluate_reports_loss_and_accuracy():
    teacher, student = models()
    x, y = data(50)
    d = Distiller(teacher, student)
    out = d.evaluate(loader(x, y, batch_size=16, shuffle=False))
    with torch.no_grad():
        acc = float((student(x).argmax(1) == y).float().mean())
        loss = fd.kd_loss(student(x), teacher(x), y, temperature=4.0, alpha=0.5)
    assert out["accuracy"] == pytest.approx(acc)
    assert out["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert "accuracy" not in d.evaluate(loader(x, batch_size=16))


# ---------------------------------------------------------------------------------------------------- modes


def test_modes():
    teacher, student = models()
    x, y = data(16)
    pre = Distiller(teacher, copy.deepcopy(student), mode="pretrain")
    assert pre.loss.alpha == 1.0 and pre.lr == 1e-3
    got = pre.compute_loss((x, y))[0]  # labels present but never read
    torch.testing.assert_close(got, fd.kd_loss(student(x), teacher(x), temperature=4.0, alpha=1.0))
    assert Distiller(teacher, copy.deepcopy(student), mode="finetune").lr == 1e-4
    assert Distiller(teacher, copy.deepcopy(student), mode="finetune", lr=5e-5).optimizer.param_groups[0]["lr"] == 5e-5
    # the user's loss module is not changed by pretrain
    kd = fd.nn.KDLoss(temperature=2.0, alpha=0.3)
    Distiller(teacher, copy.deepcopy(student), loss=kd, mode="pretrain")
    assert kd.alpha == 0.3


def test_fit_learns_and_records_history():
    torch.manual_seed(0)
    x, y = data(256)
    teacher = mlp(64)
    Distiller(mlp(4), teacher, loss=fd.nn.KDLoss(alpha=0.0), lr=1e-2).fit(loader(x, y), 15, progress=False)
    student = mlp(16)
    d = Distiller(teacher, student, lr=5e-3)
    before = d.evaluate(loader(x, y, shuffle=False))
    hist = d.fit(loader(x, y), 8, val_loader=loader(x, y, shuffle=False), progress=False)
    assert [h["epoch"] for h in hist] == list(range(1, 9))
    assert {"loss", "distill", "lr", "samples_per_s", "seconds", "val_loss", "val_accuracy"} <= set(hist[-1])
    assert hist[-1]["val_loss"] < 0.5 * before["loss"]
    assert hist[-1]["val_accuracy"] > before["accuracy"] + 0.2
    assert d.global_step == 8 * 16 and d.epoch == 8


# ---------------------------------------------------------------------------------------------------- features


def test_features_project_widths_and_train_the_projection():
    teacher, student = models()
    x, y = data(16)
    d = Distiller(teacher, student, features={"1": "1"}, feature_loss="mse", feature_weight=0.5)
    assert d.optimizer is None  # built with the projections, on the first batch
    loss, terms = d.compute_loss((x, y))
    proj = d.projections[0]
    assert isinstance(proj, nn.Linear) and proj.weight.shape == (48, 16)
    assert any(p is proj.weight for g in d.optimizer.param_groups for p in g["params"])
    hs = torch.relu(student[0](x))
    ht = torch.relu(teacher[0](x)).detach()
    want_feat = (proj(hs) - ht).pow(2).mean()
    torch.testing.assert_close(terms["feature"], want_feat.detach())
    torch.testing.assert_close(loss, terms["distill"] + 0.5 * want_feat)
    w0 = proj.weight.detach().clone()
    d.step((x, y))
    assert not torch.equal(w0, proj.weight)
    # hooks only capture while the Distiller computes: the models are not edited
    student(x)
    assert all(v is None for v in d._hooks.student_out)


def test_same_width_features_need_no_projection_and_cosine_masks_tokens():
    torch.manual_seed(0)

    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 5)

        def forward(self, input_ids, attention_mask):
            return self.b(torch.tanh(self.a(input_ids)))

    teacher, student = Seq(), Seq()
    x = torch.randn(3, 4, 6)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]])
    d = Distiller(teacher, student, loss="mse", features={"a": "a"}, feature_loss="cosine")
    _, terms = d.compute_loss({"input_ids": x, "attention_mask": mask})
    assert isinstance(d.projections[0], nn.Identity)
    cos = 1 - F.cosine_similarity(student.a(x), teacher.a(x), dim=-1)
    torch.testing.assert_close(terms["feature"], ((cos * mask).sum() / mask.sum()).detach())


def test_bad_feature_paths_are_named():
    with pytest.raises(ValueError, match="student has no module 'nope'"):
        Distiller(*models(), features={"nope": "1"})
    with pytest.raises(ValueError, match="feature_loss"):
        Distiller(*models(), features={"1": "1"}, feature_loss="l1")


# ---------------------------------------------------------------------------------------------------- callbacks


def test_gradual_pruning_reaches_the_target_and_holds_it():
    teacher, student = models()
    x, y = data(128)
    cb = GradualPruning(0.75, start=2, end=30, every=4, schedule="cubic")
    d = Distiller(teacher, student, callbacks=[cb])
    seen = []

    class Watch(Callback):
        def on_step_end(self, distiller, step, terms):
            seen.append(compress.sparsity(distiller.student)["total"])

    d.callbacks = d.callbacks + (Watch(),)
    d._step_callbacks = [c for c in d.callbacks if type(c).on_step_end is not Callback.on_step_end]
    d.fit(loader(x, y), 6, progress=False)  # 48 steps
    assert seen[0] == 0.0 and max(seen[:29]) < 0.75
    assert all(a <= b + 1e-12 for a, b in zip(seen, seen[1:]))
    assert seen[29] == pytest.approx(0.75, abs=0.01) and seen[-1] == pytest.approx(0.75, abs=0.01)
    assert cb.pruner.steps == 48 and cb.state_dict()["steps"] == 48
    # after fit the pruner no longer counts steps of other optimizers
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    opt.step()
    assert cb.pruner.steps == 48


def test_quantization_aware_computes_with_fake_quantized_weights_during_fit_only():
    teacher, student = models()
    x, y = data(16)
    outputs = {}

    class Probe(Callback):
        def on_epoch_end(self, distiller, epoch, logs):
            lin = distiller.student[0]
            with torch.no_grad():
                outputs["during"] = lin(x)
                outputs["want"] = F.linear(x, fd.fake_quantize(lin.weight, 8, granularity="channel"), lin.bias)

    Distiller(teacher, student, callbacks=[QuantizationAware(bits=8), Probe()]).fit(loader(x, y), 1, progress=False)
    torch.testing.assert_close(outputs["during"], outputs["want"], rtol=0, atol=0)
    assert "forward" not in student[0].__dict__
    with torch.no_grad():
        torch.testing.assert_close(student[0](x), F.linear(x, student[0].weight, student[0].bias))


def test_early_stopping_stops_when_the_monitor_stalls():
    teacher, student = models()
    x, y = data(32)
    es = EarlyStopping(patience=1, monitor="val_loss")
    d = Distiller(teacher, student, lr=1e-9, callbacks=[es])  # lr ~ 0: val_loss never improves
    hist = d.fit(loader(x, y), 10, val_loader=loader(x, y, shuffle=False), progress=False)
    assert len(hist) == 3 and es.stopped_epoch == 2
    with pytest.raises(KeyError, match="val_accuracy"):
        Distiller(*models(), callbacks=[EarlyStopping(monitor="val_accuracy")]).fit(loader(x, y), 1,
                                                                                     progress=False)


# ---------------------------------------------------------------------------------------------------- resume


class StopAfter(Callback):
    def __init__(self, epochs: int, path: str):
        self.epochs, self.path = epochs, path

    def on_epoch_end(self, distiller, epoch, logs):
        if epoch + 1 == self.epochs:
            distiller.save_checkpoint(self.path)
            distiller.stop_training = True


def _state(d):
    return {k: v.clone() for k, v in d.student.state_dict().items()}


@pytest.mark.parametrize("generator", [False, True])
def test_resume_is_bit_for_bit(tmp_path, generator):
    """N epochs in one run == k epochs, checkpoint, fresh process state, resume, N - k epochs: the same weights,
    the same history, with dropout, a shuffled loader, feature projections and an LR schedule."""
    x, y = data(80)
    N, k = 5, 2
    sched = lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)  # noqa: E731
    kw = dict(features={"1": "1"}, scheduler=sched, lr=3e-3)

    def make_loader():
        return loader(x, y, batch_size=16, generator=torch.Generator().manual_seed(7) if generator else None)

    t0, s0 = models(dropout=0.2)
    torch.manual_seed(123)
    whole = Distiller(copy.deepcopy(t0), copy.deepcopy(s0), **kw)
    whole.fit(make_loader(), N, progress=False)

    torch.manual_seed(123)
    path = str(tmp_path / "ckpt.pt")
    first = Distiller(copy.deepcopy(t0), copy.deepcopy(s0), callbacks=[StopAfter(k, path)], **kw)
    first.fit(make_loader(), N, progress=False)
    assert first.epoch == k
    torch.manual_seed(999)  # whatever the process did in between
    resumed = Distiller.resume(path, copy.deepcopy(t0), mlp(16, 0.2), callbacks=[StopAfter(-1, path)], **kw)
    resumed.fit(make_loader(), N - k, progress=False)
    for name, v in _state(whole).items():
        assert torch.equal(v, resumed.student.state_dict()[name]), name
    assert all(torch.equal(a, b) for a, b in zip(whole.projections.parameters(), resumed.projections.parameters()))
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("seconds", "samples_per_s")} for e in h]  # noqa
    assert strip(whole.history) == strip(resumed.history)
    assert resumed.global_step == whole.global_step


def test_resume_mid_epoch_and_after_fit(tmp_path):
    x, y = data(80)
    t0, s0 = models(dropout=0.3)
    torch.manual_seed(5)
    whole = Distiller(copy.deepcopy(t0), copy.deepcopy(s0))
    whole.fit(loader(x, y), 3, progress=False)

    class SaveAtStep(Callback):
        def on_step_end(self, distiller, step, terms):
            if step == 7:  # inside the second epoch (5 batches per epoch)
                distiller.save_checkpoint(tmp_path / "mid.pt")

    torch.manual_seed(5)
    Distiller(copy.deepcopy(t0), copy.deepcopy(s0), callbacks=[SaveAtStep()]).fit(loader(x, y), 2, progress=False)
    d = Distiller.resume(tmp_path / "mid.pt", copy.deepcopy(t0), mlp(16, 0.3))  # stateless callbacks may differ
    assert d.epoch == 1 and d.global_step == 7 and d.batch_in_epoch == 0
    d.fit(loader(x, y), 2, progress=False)
    for name, v in _state(whole).items():
        assert torch.equal(v, d.student.state_dict()[name]), name

    # k epochs in one fit, a checkpoint after it, the rest in another process's fit
    torch.manual_seed(5)
    a = Distiller(copy.deepcopy(t0), copy.deepcopy(s0))
    a.fit(loader(x, y), 1, progress=False)
    a.save_checkpoint(tmp_path / "end.pt")
    b = Distiller.resume(tmp_path / "end.pt", copy.deepcopy(t0), mlp(16, 0.3))
    b.fit(loader(x, y), 2, progress=False)
    for name, v in _state(whole).items():
        assert torch.equal(v, b.student.state_dict()[name]), name


def test_resume_with_gradual_pruning(tmp_path):
    """The masks travel in the student's state_dict; the callback's state is the pruner's step count."""
    x, y = data(64)
    t0, s0 = models()
    cb = lambda: GradualPruning(0.6, start=0, end=12, every=3)  # noqa: E731
    torch.manual_seed(0)
    whole = Distiller(copy.deepcopy(t0), copy.deepcopy(s0), callbacks=[cb()])
    whole.fit(loader(x, y), 4, progress=False)
    torch.manual_seed(0)
    first = Distiller(copy.deepcopy(t0), copy.deepcopy(s0), callbacks=[cb()])
    first.fit(loader(x, y), 1, progress=False)
    first.save_checkpoint(tmp_path / "p.pt")
    resumed = Distiller.resume(tmp_path / "p.pt", copy.deepcopy(t0), mlp(16), callbacks=[cb()])
    resumed.fit(loader(x, y), 3, progress=False)
    assert resumed.callbacks[0].pruner.steps == 16
    assert compress.sparsity(resumed.student)["total"] == pytest.approx(0.6, abs=0.01)
    for name, v in _state(whole).items():
        assert torch.equal(v, resumed.student.state_dict()[name]), name


def test_resume_checks_the_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something else"}, bad)
    with pytest.raises(ValueError, match="not a Distiller checkpoint"):
        Distiller.resume(bad, *models())
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read"):
        Distiller.resume(bad, *models())
    d = Distiller(*models(), callbacks=[EarlyStopping(monitor="loss")])
    d.fit(loader(*data(16)), 1, progress=False)
    d.save_checkpoint(tmp_path / "ok.pt")
    with pytest.raises(ValueError, match="mode"):
        Distiller.resume(tmp_path / "ok.pt", *models(), mode="pretrain", callbacks=[EarlyStopping(monitor="loss")])
    with pytest.raises(ValueError, match="EarlyStopping"):  # a stateful callback must be given back
        Distiller.resume(tmp_path / "ok.pt", *models())
    es = EarlyStopping(monitor="loss")
    Distiller.resume(tmp_path / "ok.pt", *models(), callbacks=[Callback(), es])
    assert es.best == d.callbacks[0].best
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left behind


# ---------------------------------------------------------------------------------------------------- shrink


def test_shrink_sequential_and_module_list_models():
    blocks = nn.Sequential(*[nn.Sequential(nn.Linear(8, 8), nn.Tanh()) for _ in range(6)])
    small = shrink(blocks, [0, 2, 4])
    assert len(small) == 3 and len(blocks) == 6
    assert torch.equal(small[1][0].weight, blocks[2][0].weight) and small[1][0].weight is not blocks[2][0].weight

    class Cfg:
        num_hidden_layers = 4

    class Attn(nn.Module):
        def __init__(self, i):
            super().__init__()
            self.layer_idx, self.proj = i, nn.Linear(4, 4)

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.config = Cfg()
            self.embed = nn.Linear(4, 4)
            self.heads = nn.ModuleList([nn.Linear(4, 4), nn.ReLU()])  # mixed types: not the blocks
            self.layers = nn.ModuleList([Attn(i) for i in range(4)])

        def forward(self, x):
            for layer in self.layers:
                x = layer.proj(x)
            return x

    teacher = Encoder()
    student = shrink(teacher, [1, 3])
    assert len(student.layers) == 2 and student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    assert [m.layer_idx for m in student.layers] == [0, 1] and [m.layer_idx for m in teacher.layers] == [0, 1, 2, 3]
    x = torch.randn(2, 4)
    torch.testing.assert_close(student(x), teacher.layers[3].proj(teacher.layers[1].proj(x)))
    assert len(shrink(teacher, [0], blocks="heads").heads) == 1
    for keep in ([], [0, 0], [2, 1], [4], [1.0]):
        with pytest.raises(ValueError, match="keep"):
            shrink(teacher, keep)
    with pytest.raises(ValueError, match="no ModuleList"):
        shrink(nn.Linear(2, 2), [0])


# ---------------------------------------------------------------------------------------------------- errors


def test_bad_arguments_are_named():
    teacher, student = models()
    cases = [
        (TypeError, "student", lambda: Distiller(teacher, "student")),
        (TypeError, "teacher", lambda: Distiller(None, student)),
        (ValueError, "teacher", lambda: Distiller(student, student)),
        (ValueError, "mode", lambda: Distiller(teacher, student, mode="distil")),
        (ValueError, "loss", lambda: Distiller(teacher, student, loss="kl")),
        (ValueError, "lr", lambda: Distiller(teacher, student, lr=0)),
        (ValueError, "feature_weight", lambda: Distiller(teacher, student, feature_weight=-1)),
        (TypeError, "optimizer", lambda: Distiller(teacher, student, optimizer="adam")),
        (TypeError, "scheduler", lambda: Distiller(teacher, student, scheduler=3)),
        (TypeError, "callbacks", lambda: Distiller(teacher, student, callbacks=[3])),
        (ValueError, "epochs", lambda: Distiller(teacher, student).fit([], -1)),
        (ValueError, "sparsity", lambda: GradualPruning(1.5, 0, 10, 1)),
        (ValueError, "end", lambda: GradualPruning(0.5, 10, 5, 1)),
        (ValueError, "schedule", lambda: GradualPruning(0.5, 0, 5, 1, schedule="exp")),
        (ValueError, "bits", lambda: QuantizationAware(bits=16)),
        (ValueError, "patience", lambda: EarlyStopping(patience=-1)),
    ]
    for exc, name, fn in cases:
        with pytest.raises(exc, match=name):
            fn()


def test_custom_optimizer_and_scheduler_instance():
    teacher, student = models()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5 ** step)
    d = Distiller(teacher, student, optimizer=opt, scheduler=sched)
    x, y = data(16)
    d.step((x, y))
    d.step((x, y))
    assert d.optimizer is opt and opt.param_groups[0]["lr"] == pytest.approx(0.025)
    with pytest.raises(ValueError, match="scheduler"):
        Distiller(teacher, student, scheduler=sched)  # not on the default optimizer
    assert math.isfinite(float(d.step((x, y))["loss"]))


def test_progress_bar_only_on_a_terminal(monkeypatch, capsys):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    x, y = data(64)
    term = Terminal()
    monkeypatch.setattr(sys, "stderr", term)
    Distiller(*models()).fit(loader(x, y), 1)
    assert "epoch 1" in term.getvalue() and "batch" in term.getvalue()
    quiet = Terminal()
    monkeypatch.setattr(sys, "stderr", quiet)
    Distiller(*models()).fit(loader(x, y), 1, progress=False)
    assert quiet.getvalue() == ""
    pipe = io.StringIO()  # not a terminal
    monkeypatch.setattr(sys, "stderr", pipe)
    Distiller(*models()).fit(loader(x, y), 1)
    assert pipe.getvalue() == ""
