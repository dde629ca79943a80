"""Layers with hand-written forward and backward passes.

The contract (the classic from-scratch books'): `forward(x)` keeps only what `backward`
needs; `backward(dy)` returns dx and *assigns* the parameter gradients, so calling it twice
gives the same grads. `dy` is never modified.

Outputs are written into buffers the layer keeps and reuses while the batch shape stays the
same, so a training step allocates nothing. The price: a layer's output is overwritten by
its next call. The model copies what it hands to users.
"""
from __future__ import annotations

from . import functional as F


class Buffers:
    """Work arrays by name, reused while the shape, dtype and array type stay the same."""

    def __init__(self):
        self._arrays = {}

    def get(self, name, like, shape=None):
        """An uninitialised array named `name`, of `like`'s module and dtype, and `shape`
        (default: like's)."""
        shape = tuple(like.shape if shape is None else shape)
        buf = self._arrays.get(name)
        if buf is None or buf.shape != shape or buf.dtype != like.dtype or type(buf) is not type(like):
            buf = self._arrays[name] = F.array_module(like).empty(shape, dtype=like.dtype)
        return buf


class Layer:
    """Base: each layer has its own Buffers."""

    def __init__(self):
        self._buffers = Buffers()

    def _buffer(self, name, like, shape=None):
        return self._buffers.get(name, like, shape)


class Dense(Layer):
    """y = x @ W + b.  x: (batch, n_in), W: (n_in, n_out), b: (n_out,), y: (batch, n_out).

    `W`, `b`, `dW`, `db` are arrays owned by the model (views into its flat buffers); the
    layer reads W and b and writes dW and db in place.
    needs_input_grad=False (the first layer) skips dx = dy @ W.T, a whole matrix product."""

    def __init__(self, W, b, dW, db, needs_input_grad=True):
        super().__init__()
        self.W, self.b, self.dW, self.db = W, b, dW, db
        self.needs_input_grad = needs_input_grad
        self._x = None

    def forward(self, x):
        self._x = x
        y = self._buffer("y", x, (x.shape[0], self.W.shape[1]))
        F.array_module(x).matmul(x, self.W, out=y)
        y += self.b
        return y

    def backward(self, dy):
        # y_k = sum_i x_i W_ik + b_k, so dW = x.T @ dy, db = sum of dy over the batch,
        # and dx = dy @ W.T.
        xp = F.array_module(dy)
        xp.matmul(self._x.T, dy, out=self.dW)
        xp.sum(dy, axis=0, out=self.db)
        if not self.needs_input_grad:
            return None
        return xp.matmul(dy, self.W.T, out=self._buffer("dx", self._x))


class Sigmoid(Layer):
    """y = sigmoid(z); dz = dy * y * (1 - y). Keeps y, which is all backward needs."""

    def forward(self, z):
        self._y = F.sigmoid(z, out=self._buffer("y", z))
        return self._y

    def backward(self, dy):
        return F.sigmoid_backward(dy, self._y, out=self._buffer("dz", dy))


class ReLU(Layer):
    """y = max(z, 0); dz = dy where y > 0."""

    def forward(self, z):
        self._y = F.relu(z, out=self._buffer("y", z))
        return self._y

    def backward(self, dy):
        return F.relu_backward(dy, self._y, out=self._buffer("dz", dy))


class Identity(Layer):
    """y = z (the linear output layer); dz = dy."""

    def forward(self, z):
        return z

    def backward(self, dy):
        return dy


ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU, "linear": Identity}
