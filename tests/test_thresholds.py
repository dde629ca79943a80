"""Today's mechanisms beyond TopK: BatchTopK's inference threshold, JumpReLU's learned thresholds
against a PyTorch oracle written from the paper's equations, AuxK's normalization and Gao et al.'s
initialisation."""
import math

import numpy as np
import pytest

import minisae
from minisae import SparseAutoencoder
from minisae.backend import to_numpy
from minisae.gradcheck import straight_through_gradient
from minisae.comm import Alone
from minisae.layers import BatchTopK


def batchtopk(n_inputs=6, n_hidden=5, k=2, **kw):
    return SparseAutoencoder(n_inputs, n_hidden, sparsity="batchtopk", k=k,
                             hidden_activation="relu", output_activation="linear", **kw)


def test_batchtopk_keeps_k_times_batch_codes_of_the_whole_batch():
    model = batchtopk(dtype="float64", seed=1)
    x = np.random.default_rng(0).random((4, 6))
    model.loss_and_grads(x)
    h = to_numpy(model.coding.forward(model.encoder.forward(model.input.forward(x))))
    z = np.maximum(x @ to_numpy(model.params["encoder.W"]) + to_numpy(model.params["encoder.b"]),
                   0)
    top = np.sort(z.ravel())[::-1][:2 * 4]
    np.testing.assert_allclose(np.sort(h[h > 0])[::-1], top[top > 0])
    assert (h > 0).sum() <= 2 * 4


def test_batchtopk_threshold_is_a_running_mean_of_the_smallest_kept_code():
    xp = np
    layer = BatchTopK(1, xp.full((), -1.0), Alone())
    first = np.array([[0.5, 0.0, 2.0], [0.0, 1.0, 0.0]])
    layer.update_threshold(first)
    assert float(layer.threshold) == 0.5           # the first batch sets it
    layer.update_threshold(np.array([[0.0, 0.25]]))
    assert float(layer.threshold) == pytest.approx(0.99 * 0.5 + 0.01 * 0.25)
    layer.update_threshold(np.zeros((2, 3)))       # nothing kept: unchanged
    assert float(layer.threshold) == pytest.approx(0.99 * 0.5 + 0.01 * 0.25)


def test_batchtopk_encodes_each_sample_alone_with_its_threshold():
    model = batchtopk(dtype="float64", seed=2)
    x = np.random.default_rng(1).random((8, 6))
    codes = to_numpy(model.encode(x))               # untrained: every positive code
    assert float(model.coding.threshold) == -1.0
    z = x @ to_numpy(model.params["encoder.W"]) + to_numpy(model.params["encoder.b"])
    np.testing.assert_allclose(codes, np.maximum(z, 0))
    model.coding.threshold[...] = 0.3
    codes = to_numpy(model.encode(x))
    np.testing.assert_allclose(codes, np.where(z > 0.3, z, 0.0))
    # one sample or the whole batch: the same codes (no batch at inference)
    np.testing.assert_allclose(to_numpy(model.encode(x[:1])), codes[:1])


@pytest.mark.parametrize("fast", [False, True], ids=["reference", "fast"])
def test_batchtopk_resumes_exactly_with_its_threshold(tmp_path, fast):
    x = np.random.default_rng(3).random((32, 6)).astype(np.float32)

    def run(epochs, start=None):
        if start is None:
            model = batchtopk(seed=4)
            opt = minisae.Adam(model.params, model.grads, lr=1e-2)
            history = None
        else:
            ck = minisae.load(start)
            model, opt, history = ck.model, ck.optimizer, ck.history
        history = minisae.fit(model, opt, x, epochs=epochs, batch_size=8, progress=False,
                              history=history, engine=minisae.training.Engine(fast=fast, threads=1))
        return model, opt, history

    whole, _, _ = run(4)
    half, opt, history = run(2)
    minisae.save(tmp_path / "half.npz", half, opt, history)
    resumed, _, _ = run(4, tmp_path / "half.npz")
    assert float(resumed.coding.threshold) == float(whole.coding.threshold) > 0
    np.testing.assert_array_equal(to_numpy(resumed.flat_params), to_numpy(whole.flat_params))


def jumprelu(**kw):
    kw = {"sparsity_weight": 0.3, "jump_bandwidth": 0.5, "jump_threshold": 0.2, **kw}
    return SparseAutoencoder(5, 4, sparsity="jumprelu", hidden_activation="relu",
                             output_activation="linear", dtype="float64", **kw)


def test_jumprelu_codes_jump_at_their_thresholds():
    model = jumprelu(seed=0)
    theta = np.array([0.1, 0.2, 0.3, 0.4])
    model.params["coding.log_theta"][...] = np.log(theta)
    x = np.random.default_rng(0).random((7, 5))
    z = x @ to_numpy(model.params["encoder.W"]) + to_numpy(model.params["encoder.b"])
    np.testing.assert_allclose(to_numpy(model.encode(x)), np.where(z > theta, z, 0.0))


def test_jumprelu_thresholds_start_where_the_config_says():
    np.testing.assert_allclose(np.exp(to_numpy(jumprelu(jump_threshold=0.05).params[
        "coding.log_theta"])), 0.05, rtol=1e-12)


@pytest.mark.parametrize("path", ["reference", "fast"])
def test_jumprelu_gradients_match_a_pytorch_oracle_of_the_paper(path):
    """The whole loss and every gradient against torch.autograd with JumpReLU and the step
    written from Rajamanoharan et al.'s equations (custom autograd Functions with the
    rectangle-kernel pseudo-derivatives, eqs. 11 and 12): an implementation that shares no
    code with minisae's."""
    torch = pytest.importorskip("torch")
    eps = 0.5

    class Rect:
        @staticmethod
        def k(u):
            return ((u > -0.5) & (u < 0.5)).to(u.dtype)

    class JumpReLUFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, theta):
            ctx.save_for_backward(z, theta)
            return z * (z > theta).to(z.dtype)

        @staticmethod
        def backward(ctx, g):
            z, theta = ctx.saved_tensors
            dz = g * (z > theta).to(z.dtype)
            dtheta = (g * (-(theta / eps) * Rect.k((z - theta) / eps))).sum(0)
            return dz, dtheta

    class StepFn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z, theta):
            ctx.save_for_backward(z, theta)
            return (z > theta).to(z.dtype)

        @staticmethod
        def backward(ctx, g):
            z, theta = ctx.saved_tensors
            return torch.zeros_like(z), (g * (-(1.0 / eps) * Rect.k((z - theta) / eps))).sum(0)

    for seed in range(5):
        rng = np.random.default_rng(seed)
        model = jumprelu(jump_bandwidth=eps, seed=seed)
        for p in model.params.values():
            p[...] = rng.uniform(-1, 1, size=p.shape)
        x = rng.random((6, 5))
        loss = model.loss_and_grads(x) if path == "reference" else \
            minisae.fast.loss_and_grads(model, x)
        t = {n: torch.tensor(to_numpy(p), requires_grad=True) for n, p in model.params.items()}
        tx = torch.tensor(x)
        theta = torch.exp(t["coding.log_theta"])
        z = tx @ t["encoder.W"] + t["encoder.b"]
        h = JumpReLUFn.apply(z, theta)
        y = h @ t["decoder.W"] + t["decoder.b"]
        total = ((y - tx) ** 2).mean() + 0.3 * StepFn.apply(z, theta).sum(1).mean()
        total.backward()
        assert loss.total == pytest.approx(float(total.detach()), rel=1e-12)
        for name, p in t.items():
            np.testing.assert_allclose(to_numpy(model.grads[name]), p.grad.numpy(), rtol=1e-10,
                                       atol=1e-12, err_msg=f"{name}, {path}")
        np.testing.assert_allclose(straight_through_gradient(model, x),
                                   t["coding.log_theta"].grad.numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "halfsum"])
def test_auxk_is_the_same_normalized_mse_under_either_reduction(reduction):
    """alpha ||e_hat - e||^2 / ||e - mean(e)||^2: the reduction's scale cancels."""
    values = []
    for red in ("mean", reduction):
        model = SparseAutoencoder(5, 6, sparsity="topk", k=2, hidden_activation="relu",
                                  aux_k=3, output_activation="linear", reduction=red,
                                  dtype="float64", seed=3)
        model.dead[...] = True
        values.append(model.loss_and_grads(np.random.default_rng(0).random((4, 5))).auxk)
    assert values[0] == pytest.approx(values[1], rel=1e-14) and values[0] > 0


def test_auxk_of_one_sample_is_zero():
    """A batch of one has a residual with no variance: no term (and no division by 0)."""
    model = SparseAutoencoder(5, 6, sparsity="topk", k=2, hidden_activation="relu", aux_k=3,
                              output_activation="linear", dtype="float64")
    model.dead[...] = True
    x = np.random.default_rng(0).random((1, 5))
    assert model.loss_and_grads(x).auxk == 0.0
    assert minisae.fast.loss_and_grads(model, x).auxk == 0.0


@pytest.mark.parametrize("tied", [False, True])
def test_gao_initialisation_unit_norm_decoder_rows_encoder_their_transpose(tied):
    model = SparseAutoencoder(7, 5, sparsity="topk", k=2, hidden_activation="relu",
                              output_activation="linear", init="gao", tied_weights=tied)
    W1 = to_numpy(model.params["encoder.W"])
    W2 = W1.T if tied else to_numpy(model.params["decoder.W"])
    np.testing.assert_allclose(np.linalg.norm(W2, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(W1, W2.T)
    assert not math.isclose(float(np.abs(W1).std()), 0.0)
