"""Affine int8 arithmetic of the INT8 contract (DESIGN section 4): real = scale * (q - zero_point)."""
from __future__ import annotations

import numpy as np

INT8_MIN, INT8_MAX = -128, 127


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) / scale) + zero_point, INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (scale * (np.asarray(q, np.float64) - zero_point)).astype(np.float32)


def requantize(q_e: np.ndarray, scale_e: float, zp_e: int, scale_d: float, zp_d: int) -> np.ndarray:
    """Encoder-output int8 -> decoder-input int8 when their (scale, zero point) differ:
    q_d = clamp(round(scale_e * (q_e - zp_e) / scale_d + zp_d), -128, 127). Identity when they match."""
    if scale_e == scale_d and zp_e == zp_d:
        return np.asarray(q_e, np.int8)
    real = scale_e * (np.asarray(q_e, np.float64) - zp_e)
    return np.clip(np.round(real / scale_d + zp_d), INT8_MIN, INT8_MAX).astype(np.int8)
