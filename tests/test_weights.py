"""Per-sample weights: from list files, .npz files and DANNClassifier.fit into the classification loss."""

import os

import numpy as np
import pytest
import torch

import dann
from dann.config import DataConfig, MethodConfig, ModelConfig, replace
from dann.data import as_domain, load_npz, make_domain_data, read_images
from dann.data.loaders import LoaderBatches, StepBatches
from dann.errors import DataError
from dann.methods import Batch, create_method
from dann.plan import build_network, build_run_data, plan_run

from .conftest import blobs

TIMM = ModelConfig(backbone="test_resnet")


def _grads(method, net, batch):
    net.zero_grad()
    method.loss(net, batch, 0.5).total.backward()
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["source_only", "dann"])
def test_weight_zero_gives_exactly_the_gradient_without_that_sample(name):
    """The classification loss of a batch where sample 2 weighs 0 has the gradient of the batch without it; other
    weights scale each sample's share: Σ w_i CE_i / Σ w_i."""
    torch.manual_seed(0)
    # the seed's network: without a BatchNorm bottleneck coupling the rows, dropping a sample is exact
    model = ModelConfig(backbone="mlp", mlp_dims=(8,), discriminator_dims=(4,), bottleneck_dim=0)
    method_cfg = MethodConfig(name=name, lambda_adv=0.0)  # only the classification loss reads weights
    net = build_network(model, method_cfg, (4,), 3).double()
    method = create_method(method_cfg)
    x_s, y_s, x_t = torch.randn(6, 4).double(), torch.tensor([0, 1, 2, 0, 1, 2]), torch.randn(6, 4).double()
    w = torch.tensor([1.0, 2.0, 0.0, 0.5, 1.0, 3.0]).double()
    keep = w > 0
    weighted = _grads(method, net, Batch(x_s, y_s, x_t, w))
    without = _grads(method, net, Batch(x_s[keep], y_s[keep], x_t, w[keep]))
    assert weighted.keys() == without.keys() and weighted
    for k in weighted:
        torch.testing.assert_close(weighted[k], without[k], rtol=1e-12, atol=1e-15)
    plain = _grads(method, net, Batch(x_s, y_s, x_t))
    assert any(not torch.allclose(plain[k], weighted[k]) for k in plain)  # the weights do change the gradient
    logits = net(x_s)
    eps = method.cfg.label_smoothing  # null (auto) resolved by the method
    ce = torch.nn.functional.cross_entropy(logits, y_s, reduction="none", label_smoothing=eps)
    expected = (w * ce).sum() / w.sum()
    torch.testing.assert_close(method.loss(net, Batch(x_s, y_s, x_t, w), 0.5).terms["cls"], expected.detach())


def test_npz_weights_reach_every_training_batch(tmp_path, tiny_cfg):
    x, y = blobs(60, 0.0, 0)
    x_t, _ = blobs(40, 1.5, 1)
    np.savez(tmp_path / "s.npz", x=x, y=y, w=1.0 + y)  # weight 2 on class 1, 1 on class 0
    np.savez(tmp_path / "t.npz", x=x_t)
    domain, _ = load_npz(tmp_path / "s.npz")
    assert torch.equal(domain.w, torch.tensor(1.0 + y, dtype=torch.float32))
    seen = []
    method = create_method(tiny_cfg.method)
    loss = method.loss

    def spy(net, batch, progress):
        seen.append((batch.y_s.clone(), batch.w_s.clone()))
        return loss(net, batch, progress)

    method.loss = spy
    cfg = replace(tiny_cfg, data={"source": str(tmp_path / "s.npz"), "target": str(tmp_path / "t.npz")})
    data = build_run_data(cfg.data)
    net = build_network(cfg.model, cfg.method, data.input_shape, data.num_classes)
    dann.training.trainer.Trainer(plan_run(cfg, data)).fit(net, method, data)
    assert len(seen) == cfg.train.steps
    for y_s, w_s in seen:
        assert torch.equal(w_s, 1.0 + y_s.float())


def test_bad_npz_weights_are_refused_naming_the_file_and_row(tmp_path):
    x, y = blobs(5, 0.0, 0)
    for w, message in (
        ([1, 1, -1, 1, 1], r"s\.npz, w\[2\]: weight -1 is not allowed"),
        ([1, np.inf, 1, 1, 1], r"s\.npz, w\[1\]: weight inf is not allowed"),
        ([0, 0, 0, 0, 0], r"s\.npz: every weight is zero"),
        ([1, 1], r"s\.npz: weights must have shape \(5,\)"),
    ):
        np.savez(tmp_path / "s.npz", x=x, y=y, w=np.array(w, dtype=np.float64))
        with pytest.raises(DataError, match=message):
            load_npz(tmp_path / "s.npz")


def test_a_training_part_left_with_zero_weights_is_refused():
    x, y = blobs(20, 0.0, 0)
    w = np.zeros(20)
    w[0] = 1.0
    with pytest.raises(DataError, match="every sample left for training has weight 0"):
        make_domain_data(as_domain(x, y, "s", w), as_domain(x), val_fraction=0.5, seed=_seed_holding_out(y, 0))


def _seed_holding_out(y, index):
    """A split seed whose held-out half holds sample ``index``."""
    from dann.data.domains import stratified_split

    return next(s for s in range(100) if index in stratified_split(torch.as_tensor(y), 0.5, s)[1].tolist())


def _write_list(path, paths, labels, weights, header, sep):
    lines = [header] if header else []
    rows = zip(paths, labels, weights, strict=True)
    lines += [sep.join([os.path.relpath(p, path.parent), lab, w]) for p, lab, w in rows]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize(("name", "header", "sep"), [("s.csv", "path,label,weight", ","), ("s.csv", "", ","),
                                                     ("s.txt", "path label weight", " ")])  # fmt: skip
def test_list_file_weights_reach_the_image_batches(shape_folders, tmp_path, name, header, sep):
    images = read_images(shape_folders["source"])
    weights = [str(1 + sorted(set(images.labels)).index(lab)) for lab in images.labels]  # 1, 2, 3 by class
    listed = tmp_path / name
    _write_list(listed, images.paths, images.labels, weights, header, sep)
    cfg = DataConfig(source=str(listed), target=str(shape_folders["flat"]), image_size=32, num_workers=0)
    data = build_run_data(cfg, TIMM)
    assert torch.equal(data.source_train.w, 1.0 + data.source_train.y.float())
    rows = LoaderBatches(data.source_train, 5, 0, torch.device("cpu"), 0, augment=False).get_rows(0)
    assert torch.equal(rows.w, 1.0 + rows.y.float())


def test_in_memory_batches_carry_weights():
    x, y = blobs(30, 0.0, 0)
    domain = as_domain(x, y, "s", 0.5 + y)
    rows = StepBatches(domain, 8, 0, torch.device("cpu"), augment=False).get_rows(3)
    assert torch.equal(rows.w, 0.5 + rows.y.float())
