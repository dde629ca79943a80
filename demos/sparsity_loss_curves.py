"""Why a KL sparsity penalty: plot KL(p || q), |p - q| and (p - q)^2 against q.

    python demos/sparsity_loss_curves.py --out runs/sparsity_loss_curves.png

The figure from Géron's Hands-On ML (autoencoders, "sparsity loss"): for a target
sparsity p the KL divergence grows without bound as the actual sparsity q nears 0 or 1,
so it pushes a saturated unit back much harder than the absolute or squared error.
"""

import argparse

from minisae.apps import plots

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="runs/sparsity_loss_curves.png", help="PNG to write")
parser.add_argument("--target", type=float, default=0.1, help="target sparsity p, in (0, 1)")
parser.add_argument("--backend", default="numpy",
                    help="accepted for uniformity with the other demos; unused (pure NumPy)")
args = parser.parse_args()

path = plots.sparsity_loss_curves(args.out, target=args.target)
print(f"wrote {path}")
