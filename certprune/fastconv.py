"""A 2-D convolution as a linear map of flat (C, H, W) vectors, in numpy, for the fast path (``fastpath``).

The fast path's bounds need two products with a layer's matrix ``W`` (out, in): ``x @ W.T`` forward and
``A @ W`` back. A small convolution is unrolled into that matrix once (BLAS then does the rest); a large one
(collins_rul_cnn's window-40 network: 12,800 x 7,200) is applied offset by offset of its kernel, without the
matrix. ``linear_map`` returns whichever fits; ``apply`` and ``back`` take either.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNROLL = 1 << 22  # matrix entries (32 MB in float64) up to which a convolution becomes a dense matrix


@dataclass(frozen=True, eq=False)
class Conv:
    """ONNX Conv (one group): ``weight`` (C_out, C_in, kh, kw), ``pads`` (top, left, bottom, right), on inputs
    of shape ``in_shape`` (C_in, H, W), channel-major flat vectors in and out."""

    weight: np.ndarray
    strides: tuple[int, int]
    pads: tuple[int, int, int, int]
    dilations: tuple[int, int]
    in_shape: tuple[int, int, int]

    @property
    def out_shape(self) -> tuple[int, int, int]:
        _, h, w = self.in_shape
        kh, kw = self.weight.shape[2:]
        (sh, sw), (dh, dw), (t, left, b, r) = self.strides, self.dilations, self.pads
        return (self.weight.shape[0], (h + t + b - dh * (kh - 1) - 1) // sh + 1,
                (w + left + r - dw * (kw - 1) - 1) // sw + 1)

    @property
    def shape(self) -> tuple[int, int]:
        """As a matrix: (outputs, inputs)."""
        return int(np.prod(self.out_shape)), int(np.prod(self.in_shape))

    @property
    def macs(self) -> int:
        return int(self.weight.size * np.prod(self.out_shape[1:]))

    def astype(self, dtype) -> "Conv":
        return Conv(self.weight.astype(dtype), self.strides, self.pads, self.dilations, self.in_shape)

    def abs(self) -> "Conv":
        return Conv(np.abs(self.weight), self.strides, self.pads, self.dilations, self.in_shape)

    def _windows(self):
        """Per kernel offset (a, b): the slices of the padded input that meet output positions."""
        _, ho, wo = self.out_shape
        (sh, sw), (dh, dw) = self.strides, self.dilations
        for a in range(self.weight.shape[2]):
            for b in range(self.weight.shape[3]):
                rows = slice(a * dh, a * dh + sh * (ho - 1) + 1, sh)
                yield a, b, (rows, slice(b * dw, b * dw + sw * (wo - 1) + 1, sw))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x @ W.T`` for flat inputs x (B, in): each output position gathers a window of the padded input,
        one matrix product per kernel offset, channels last (contiguous for BLAS)."""
        kernel = self.weight.transpose(2, 3, 1, 0)  # (kh, kw, C_in, C_out)
        padded = self._padded(len(x), self.in_shape[0], np.result_type(x, kernel))
        rows, cols = self._inside()
        padded[:, rows, cols] = _channels_last(x.reshape(len(x), *self.in_shape))
        out = 0
        for a, b, window in self._windows():
            out = out + padded[:, window[0], window[1]] @ kernel[a, b]
        return _channels_first(out)

    def back(self, A: np.ndarray) -> np.ndarray:
        """``A @ W`` for rows A (M, out): each output position scatters into a window of the padded input, with
        one matrix product for every kernel offset at once, (positions, C_out) @ (C_out, offsets * C_in)."""
        c_in = self.in_shape[0]
        grid = _channels_last(A.reshape(len(A), *self.out_shape))
        kernel = self.weight.transpose(0, 2, 3, 1).reshape(self.weight.shape[0], -1)  # (C_out, kh * kw * C_in)
        every = (grid.reshape(-1, grid.shape[-1]) @ kernel).reshape(*grid.shape[:-1], -1)
        padded = self._padded(len(A), c_in, np.result_type(A, kernel))
        for index, (_, _, window) in enumerate(self._windows()):
            padded[:, window[0], window[1]] += every[..., index * c_in:(index + 1) * c_in]
        rows, cols = self._inside()
        return _channels_first(padded[:, rows, cols])

    def _padded(self, count: int, channels: int, dtype) -> np.ndarray:
        """Zeros shaped like ``count`` padded inputs, channels last."""
        (_, h, w), (t, left, b, r) = self.in_shape, self.pads
        return np.zeros((count, h + t + b, w + left + r, channels), dtype=dtype)

    def _inside(self) -> tuple[slice, slice]:
        """The rows and columns of the padded input that are the input."""
        (_, h, w), (t, left, _, _) = self.in_shape, self.pads
        return slice(t, t + h), slice(left, left + w)


def _channels_last(grid: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(grid.transpose(0, 2, 3, 1))


def _channels_first(grid: np.ndarray) -> np.ndarray:
    """(B, H, W, C) as flat channel-major vectors (B, C * H * W)."""
    return np.ascontiguousarray(grid.transpose(0, 3, 1, 2)).reshape(len(grid), -1)


def linear_map(conv: Conv):
    """The convolution as a dense (out, in) float32 matrix when it has at most ``UNROLL`` entries, else itself."""
    out, size = conv.shape
    if out * size > UNROLL:
        return conv
    c_in, h, w = conv.in_shape
    c_out, ho, wo = conv.out_shape
    (sh, sw), (dh, dw), (top, left, _, _) = conv.strides, conv.dilations, conv.pads
    o, c, i, j = np.ix_(np.arange(c_out), np.arange(c_in), np.arange(ho), np.arange(wo))
    matrix = np.zeros((out, size), dtype=np.float32)
    for a in range(conv.weight.shape[2]):
        for b in range(conv.weight.shape[3]):
            # output (o, i, j) reads input (c, y, x) with this kernel entry, where (y, x) is inside the input
            y, x = i * sh + a * dh - top, j * sw + b * dw - left
            inside = np.broadcast_to((y >= 0) & (y < h) & (x >= 0) & (x < w), (c_out, c_in, ho, wo))
            rows = np.broadcast_to((o * ho + i) * wo + j, inside.shape)[inside]
            cols = np.broadcast_to((c * h + y) * w + x, inside.shape)[inside]
            matrix[rows, cols] = np.broadcast_to(conv.weight[:, :, a, b][:, :, None, None], inside.shape)[inside]
    return matrix


def apply(w, x: np.ndarray) -> np.ndarray:
    """``x @ w.T`` for a dense matrix or a Conv."""
    return x @ w.T if isinstance(w, np.ndarray) else w.apply(x)


def back(A: np.ndarray, w) -> np.ndarray:
    """``A @ w`` for a dense matrix or a Conv, rows A (M, out)."""
    return A @ w if isinstance(w, np.ndarray) else w.back(A)
