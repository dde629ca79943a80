"""A guided gradient check: the hand-written backward pass against central differences.

    python demos/gradcheck_tour.py

Six steps, each explained as it runs, on a model small enough to print:
  1. build a tiny float64 sparse autoencoder and a batch
  2. one analytic backward pass (model.loss_and_grads, the reference path), and the lines
     of model.py it ran
  3. central differences for one weight by hand: f(p + h), f(p - h), the quotient
  4. the relative error, and why the check runs in float64 (a float32 twin for contrast)
  5. the full table for every parameter (minisae.gradcheck.check_model + format_table), then
     the same check of the fast engine (minisae.fast.check_model)
  6. a deliberately broken gradient, the sparsity term's forgotten, and the check naming
     the parameters it breaks
It exits with status 1 if the real check (step 5) fails, or if the broken gradient of
step 6 slips through. Runs in a second or two. `minisae gradcheck` runs step 5 for every
loss option.
"""

import argparse
import inspect
import sys
import textwrap

import numpy as np

from minisae import SparseAutoencoder, to_numpy
from minisae import fast
from minisae import losses
from minisae.layers import MeanOverBatch
from minisae.model import SparseAutoencoder as _Model
from minisae.errors import GradientCheckError
from minisae.gradcheck import (STEP, THRESHOLD, GradCheckRow, assert_gradients_ok, check_model,
                               format_table, numerical_gradient, relative_error)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n-inputs", type=int, default=6, help="inputs (pixels) of the tiny model")
parser.add_argument("--n-hidden", type=int, default=4, help="hidden units")
parser.add_argument("--batch", type=int, default=5, help="samples in the batch")
parser.add_argument("--beta", type=float, default=3.0, help="sparsity weight")
parser.add_argument("--weight-decay", type=float, default=1e-2, help="lambda")
parser.add_argument("--reduction", default="halfsum", choices=("mean", "halfsum"),
                    help="MSE scale (UFLDL's halfsum by default)")
parser.add_argument("--step", type=float, default=STEP, help="h of the central differences")
parser.add_argument("--seed", type=int, default=0, help="weights and inputs")
parser.add_argument("--backend", default=None, choices=("numpy", "cupy", "auto"),
                    help="array backend (default: $MINISAE_BACKEND, else auto)")
parser.add_argument("--out", default=None, help="also write the step-5 table to this file")
parser.add_argument("--quick", action="store_true",
                    help="accepted for uniformity with the other demos (this one is always quick)")
args = parser.parse_args()
if args.beta <= 0:
    parser.error("--beta must be > 0: step 6 breaks the sparsity term's gradient")


def say(text):
    print(textwrap.fill(" ".join(text.split()), width=88) + "\n")


def step(n, title):
    print(f"--- {n}. {title} " + "-" * max(0, 80 - len(title)))


h = args.step


def source_lines(function, *needles):
    """(file:line, text) of the lines of `function` that contain any of the needles."""
    lines, first = inspect.getsourcelines(function)
    where = inspect.getsourcefile(function).split("minisae/")[-1]
    return [(f"minisae/{where}:{first + i}", line.strip()) for i, line in enumerate(lines)
            if any(n in line for n in needles) and not line.strip().startswith("#")]

# ----------------------------------------------------------------------------- 1
step(1, "a tiny model")
model = SparseAutoencoder(args.n_inputs, args.n_hidden, sparsity_target=0.1,
                          sparsity_weight=args.beta, weight_decay=args.weight_decay,
                          reduction=args.reduction, backend=args.backend, dtype="float64",
                          seed=args.seed)
x = np.random.default_rng(args.seed).random((args.batch, args.n_inputs))
print(model)
print(f"x: {x.shape}, uniform in [0, 1); parameters: "
      + ", ".join(f"{k} {tuple(v.shape)}" for k, v in model.params.items())
      + f"; {model.n_params} numbers in all\n")
say(f"""Small enough that perturbing every one of its {model.n_params} numbers twice costs
nothing, and every term of the loss is switched on (reconstruction, beta = {args.beta:g} times
the KL sparsity penalty, lambda = {args.weight_decay:g} weight decay), so a mistake in any
backward formula has somewhere to show. The dtype is float64; step 4 says why.
model.loss_and_grads is the reference path: it runs the layers of minisae/layers.py and the
formulas of minisae/functional.py, the code this tour points at. (Training runs the fast
engine by default, minisae.fast.loss_and_grads(model, x) in minisae/fast/, which computes
the same numbers; step 5 checks it too.)""")

# ----------------------------------------------------------------------------- 2
step(2, "one analytic backward pass")
loss = model.loss_and_grads(x)
analytic = {name: to_numpy(g).copy() for name, g in model.grads.items()}
print(f"loss = {loss.total:.10f}  (reconstruction {loss.reconstruction:.6f} + sparsity "
      f"{loss.sparsity:.6f} + weight decay {loss.weight_decay:.6f})")
for name, g in analytic.items():
    print(f"  |d loss / d {name:<9}| = {np.linalg.norm(g):.6g}")
print()
say("""loss_and_grads runs the forward pass, then the hand-written backward pass: each term
of the loss gives its gradient with respect to what it read (the reconstruction's d/dy, the
KL term's d/d rho_hat, from minisae/losses.py), and the layers carry them down in reverse:
the output sigmoid, the decoder, rho_hat's share added to dh (every h[i, j] reaches it
through rho_hat_j), the hidden sigmoid and the encoder; weight decay adds lambda * W. The
gradients land in model.grads. These are the backward lines it just ran:""")
reconstruction_term = type(model.objective.term("reconstruction"))
backward_lines = (source_lines(_Model.loss_and_grads, "self.objective.backward(",
                               ".output.backward(", ".decoder.backward(", ".coding.backward(",
                               ".encoder.backward(", "losses.add_grads(")
                  + source_lines(reconstruction_term.backward, "F.")
                  + source_lines(losses.KL.backward, "F.kl_penalty_backward(")
                  + source_lines(MeanOverBatch.backward, "return ")
                  + source_lines(losses.WeightDecay.backward, "F.weight_decay_backward("))
for where, line in backward_lines:
    print(f"  {where:<22} {line}")
print()
say("""The question for the rest of the tour: are they right?""")

# ----------------------------------------------------------------------------- 3
step(3, "central differences for one weight, by hand")
name, (i, j) = "encoder.W", (min(2, args.n_inputs - 1), min(1, args.n_hidden - 1))
W = model.params[name]
p0 = float(W[i, j])


def f():
    """The loss of x at the current weights, forward only (grads are left alone)."""
    return model.loss(x).total


f_zero = f()
W[i, j] = p0 + h
f_plus = f()
W[i, j] = p0 - h
f_minus = f()
W[i, j] = p0  # restore exactly
numeric_one = (f_plus - f_minus) / (2 * h)
forward_one = (f_plus - f_zero) / h  # one-sided, for contrast
analytic_one = float(analytic[name][i, j])
print(f"p = {name}[{i}, {j}] = {p0:.10f},  h = {h:g}")
print(f"f(p)     = {f_zero:.12f}")
print(f"f(p + h) = {f_plus:.12f}")
print(f"f(p - h) = {f_minus:.12f}")
print(f"(f(p + h) - f(p - h)) / 2h = {numeric_one:.12f}   central difference")
print(f"(f(p + h) - f(p)) / h      = {forward_one:.12f}   one-sided, for contrast")
print(f"analytic d loss / d p      = {analytic_one:.12f}")
print(f"|central - analytic| = {abs(numeric_one - analytic_one):.2e},  "
      f"|one-sided - analytic| = {abs(forward_one - analytic_one):.2e}\n")
say("""Taylor: f(p + h) = f + h f' + h^2/2 f'' + h^3/6 f''' + ..., so the one-sided quotient is
off by about h/2 f'' (error O(h)) while in the central one the f'' terms cancel and only
h^2/6 f''' is left (error O(h^2)). That is why gradient checks use central differences.""")

# ----------------------------------------------------------------------------- 4
step(4, "the relative error, and why float64")
err_one = relative_error(numeric_one, analytic_one)
say(f"""A difference of 1e-9 means nothing without a scale: it is tiny next to a gradient
of 100 and huge next to one of 1e-8. The check therefore uses UFLDL's relative error,
||numeric - analytic|| / ||numeric + analytic||, over all of a parameter's entries at
once. For our one weight it is {err_one:.2e}; a right gradient gives about 1e-9 or less, a
clearly wrong one 1e-2 or more, and the threshold is {THRESHOLD:.0e}.""")
twin32 = SparseAutoencoder(**dict(model.config.as_dict(), dtype="float32"),
                           backend=model.backend)  # same seed: the same weights, in float32
x32 = x.astype(np.float32)
errors32 = {pname: relative_error(numerical_gradient(lambda: twin32.loss(x32).total, p32, h),
                                  analytic[pname])
            for pname, p32 in twin32.params.items()}
print("the same central differences on a float32 twin (same weights), against the right "
      "(float64) gradients:")
print("  " + ", ".join(f"{k} {e:.1e}" for k, e in errors32.items()) + "\n")
say(f"""Why float64: f(p + h) and f(p - h) agree in all but their last few digits, and the
quotient divides what is left by 2h = {2 * h:g}. Each loss carries a rounding error of about
eps * |f|, so the quotient carries about eps * |f| / h: with float64 (eps 2.2e-16) that is
near 1e-10 here, far below the threshold; with float32 (eps 1.2e-7) it is near 1e-2, and
p + h itself is rounded to float32's grid. So the float32 twin above, with exactly the same
weights and right gradients, scores like a wrong gradient would: in float32 the check
cannot tell the two apart. The training runs in float32; the check runs the same code in
float64.""")

# ----------------------------------------------------------------------------- 5
step(5, "every parameter: check_model and format_table")
rows = check_model(model, x, h=h)  # model.loss_and_grads
table = format_table(rows, f"{model} on {args.batch} samples, h = {h:g}, "
                           f"threshold {THRESHOLD:.0e}")
print(table + "\n")
if args.out:
    with open(args.out, "w") as out:
        out.write(table + "\n")
ok = all(r.ok for r in rows)
verdict = ("Every parameter passes: the backward pass is right." if ok else
           "SOME PARAMETERS FAIL: a bug in the backward pass, or a step h too large "
           "or too small for this check (see the table).")
say(f"""check_model does step 3 for each of the {model.n_params} numbers (two forward
passes each), then step 4 for each parameter array. {verdict}""")
fast_rows = fast.check_model(model, x, h=h)  # minisae.fast.loss_and_grads
ok = ok and all(r.ok for r in fast_rows)
print(f"the fast engine (minisae.fast.check_model), same model: largest relative error "
      f"{max(r.rel_error for r in fast_rows):.2e} ({'all pass' if all(r.ok for r in fast_rows) else 'FAIL'})\n")

# ----------------------------------------------------------------------------- 6
step(6, "break a gradient on purpose")
(kl_line,) = source_lines(_Model.loss_and_grads, "self.mean.backward(")
say(f"""Suppose the backward pass forgot the sparsity term: the line that adds the KL gradient
to dh, which step 2 ran, {kl_line[0]}:""")
print(f"  {kl_line[1]}\n")
say("""We can imitate that bug without touching the library: take the analytic gradients
of a twin with the same weights but beta = 0, and compare them with central differences of
the real loss, which does include the KL term.""")
forgetful = SparseAutoencoder(**dict(model.config.as_dict(), sparsity_weight=0.0),
                              backend=model.backend)
forgetful.loss_and_grads(x)
broken_rows, numeric = [], {}
for pname, p in model.params.items():
    numeric[pname] = numerical_gradient(f, p, h)
    wrong = to_numpy(forgetful.grads[pname])
    broken_rows.append(GradCheckRow(pname, tuple(p.shape), float(np.linalg.norm(wrong)),
                                    float(np.linalg.norm(numeric[pname])),
                                    relative_error(numeric[pname], wrong), THRESHOLD))
print(format_table(broken_rows, "analytic gradients without the sparsity term's backward") + "\n")
try:
    assert_gradients_ok(broken_rows)
    caught = False
    print("NOT CAUGHT: the check passed a broken gradient\n")
except GradientCheckError as e:
    caught = True
    print(f"GradientCheckError: {e}\n")
say("""The check fails exactly where the bug lives: the KL term depends on h alone, so only the
encoder's gradients (encoder.W, encoder.b) change, and the decoder's still pass. Subtler
slips are caught too, since a right gradient agrees to about nine digits:""")
b = "encoder.b"
slip = relative_error(numeric[b], analytic[b] * 1.01)
print(f"  {b} gradient scaled by 1.01: relative error {slip:.2e} "
      f"({'caught' if slip >= THRESHOLD else 'NOT caught'}, threshold {THRESHOLD:.0e})\n")
caught = caught and slip >= THRESHOLD

if not ok:
    worst = max(rows, key=lambda r: r.rel_error)
    print(f"FAILED: the real gradient check failed; worst {worst.name} with relative error "
          f"{worst.rel_error:.2e}", file=sys.stderr)
    sys.exit(1)
if not caught:
    print("FAILED: a deliberately broken gradient passed the check", file=sys.stderr)
    sys.exit(1)
print("all real gradients match, and the broken ones were caught")
