"""Quantization-friendly Transformer layers (tf_keras), with a `reference` switch.

Deployment form (default), as DESIGN section 3 requires:
- bounded masks: masked scores land on `-mask_value`, masks come from GATHER on constant tables and the
  causal mask from MINIMUM against a constant (no CAST, no -1e9);
- LayerNorm variance as MUL(xc, xc) (no SQUARED_DIFFERENCE / SQUARE);
- the attention scale folded into the query projection;
- static shapes only.
Reference form (`reference=True`, same variables): large additive mask and a standard LayerNorm, as a
Hugging Face or Keras exporter would produce it.

Quantization hooks: every tensor that becomes int8 in TFLite passes through `self.fq(kind, x, training)`, which
is the identity until `s2s_qat.qat` attaches a quantization state (then the policy table picks the tfmot
quantizer for that layer type and tensor kind). FP32 and QAT models are therefore the same layers with the same
variable names; the quantizer ranges are extra variables created when quantization is attached.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import tf_keras

REFERENCE_MASK_VALUE = 1e9
_ACTIVATIONS = {
    "relu": tf.nn.relu,
    "gelu": lambda x: tf.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: tf.nn.gelu(x, approximate=True),
    "swish": tf.nn.silu,
}


def activation_fn(name: str):
    if name not in _ACTIVATIONS:
        raise ValueError(f"activation {name!r} is not supported; allowed: {', '.join(sorted(_ACTIVATIONS))}")
    return _ACTIVATIONS[name]


def sinusoidal_table(n_pos: int, dim: int) -> np.ndarray:
    """Marian's table: sin of even-index angles in the first half, cos of odd-index angles in the second."""
    pos = np.arange(n_pos)[:, None]
    j = np.arange(dim)[None, :]
    angle = pos / np.power(10000, 2 * (j // 2) / dim)
    out = np.zeros((n_pos, dim), dtype=np.float32)
    half = dim // 2 + dim % 2
    out[:, :half] = np.sin(angle[:, 0::2])
    out[:, half:] = np.cos(angle[:, 1::2])
    return out


# === Quantization hook ===

class Quantizable(tf_keras.layers.Layer):
    """A layer whose int8 tensors are marked with `fq`; identity while no quantization state is attached."""

    quant_state = None  # set on the instance by s2s_qat.qat.attach_quantization

    def fq(self, kind: str, x, training=False):
        state = self.quant_state
        return x if state is None else state.apply(self, kind, x, training)


def _identity(x):
    return x


# === Masks ===

def mask_bias(mask: tf.Tensor, mask_value: float, reference: bool, fq=_identity) -> tf.Tensor:
    """int32 {0,1} mask -> float additive bias {-value, 0}.

    Deployment: GATHER from a constant table (no CAST). Reference: CAST then a -1e9 additive mask.
    `fq` marks the constant table (a fixed [-value, 0] range under QAT; GATHER keeps its scale).
    """
    with tf.name_scope("mask_bias"):
        if reference:
            return (1.0 - tf.cast(mask, tf.float32)) * -REFERENCE_MASK_VALUE
        return fq(tf.gather(fq(tf.constant([-mask_value, 0.0], tf.float32)), mask))


def causal_bias(key_bias: tf.Tensor, length: int, mask_value: float, reference: bool, fq=_identity) -> tf.Tensor:
    """[B,T] key bias -> [B,T,T] bias that also blocks future keys.

    Deployment: MINIMUM of the key bias and a constant lower-triangular {-value, 0} table, so every entry
    stays in {-value, 0} (and, under QAT, in the same fixed range as the key bias). Reference: sum with a -1e9
    upper triangle.
    """
    tri = np.tril(np.ones((length, length), dtype=np.float32))
    with tf.name_scope("causal_bias"):
        if reference:
            return key_bias[:, None, :] + tf.constant((tri - 1.0) * REFERENCE_MASK_VALUE)[None]
        return fq(tf.minimum(key_bias[:, None, :], fq(tf.constant((tri - 1.0) * mask_value)[None])))


# === Layers ===

class Linear(Quantizable):
    """x @ kernel + bias on the last axis (FULLY_CONNECTED after conversion); optional folded scale."""

    def __init__(self, units: int, use_bias: bool = True, scale: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.use_bias, self.scale = units, use_bias, scale

    def build(self, input_shape):
        self.kernel = self.add_weight("kernel", shape=(int(input_shape[-1]), self.units),
                                      initializer=tf_keras.initializers.GlorotUniform())
        self.bias = self.add_weight("bias", shape=(self.units,), initializer="zeros") if self.use_bias else None
        super().build(input_shape)

    def call(self, x, training=False):
        kernel, bias = self.kernel, self.bias
        if self.scale != 1.0:  # folded: x @ (s W) + s b == s (x @ W + b)
            kernel = kernel * self.scale
            bias = bias * self.scale if bias is not None else None
        kernel = self.fq("kernel", kernel, training)  # per output channel; the int32 bias is derived by TFLite
        y = tf.tensordot(x, kernel, axes=1) if x.shape.rank > 2 else tf.matmul(x, kernel)
        return self.fq("output", y + bias if bias is not None else y, training)


LAYERNORM_VARIANCE = ("mul", "matmul")


class LayerNorm(Quantizable):
    """Deployment LayerNorm; `variance` picks how the int8 graph forms the variance (same float function):

    mul     var = MEAN(MUL(xc, xc)): every square is an int8 tensor. Its range is set by the largest squared
            deviation, so with an outlier feature most squares round to 0 or 1 step and the variance of a
            typical token is coarse, and MEAN rescales a sum of those coarse steps (TFLite's double rounding).
    matmul  sum = BATCH_MATMUL(xc[1, D], xc[D, 1]): the sum of squares accumulates int8 products exactly in
            int32 and is rounded once; the 1/D moves into the constants, since rsqrt(sum/D + eps) =
            sqrt(D) * rsqrt(sum + D*eps): `eps` holds D*eps and the quantized gamma is sqrt(D) * gamma.
    """

    def __init__(self, eps: float, variance: str = "mul", **kwargs):
        super().__init__(**kwargs)
        if variance not in LAYERNORM_VARIANCE:
            raise ValueError(f"LayerNorm variance {variance!r} is not supported; "
                             f"allowed: {', '.join(LAYERNORM_VARIANCE)}")
        self.eps, self.variance = eps, variance

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.gamma = self.add_weight("gamma", shape=(dim,), initializer="ones")
        self.beta = self.add_weight("beta", shape=(dim,), initializer="zeros")
        super().build(input_shape)

    def call(self, x, reference: bool = False, training=False):
        if reference:
            mean, var = tf.nn.moments(x, axes=[-1], keepdims=True)  # SQUARED_DIFFERENCE after conversion
            return (x - mean) * tf.math.rsqrt(var + self.eps) * self.gamma + self.beta
        fq = lambda kind, t: self.fq(kind, t, training)  # noqa: E731
        xc = fq("centered", x - fq("mean", tf.reduce_mean(x, axis=-1, keepdims=True)))
        if self.variance == "matmul":
            dim = int(x.shape[-1])
            var = fq("variance", tf.squeeze(tf.matmul(xc[..., None, :], xc[..., :, None]), -1))  # (..., 1): sum
            eps, gamma = dim * self.eps, math.sqrt(dim) * self.gamma
        else:
            var = fq("variance", tf.reduce_mean(fq("square", xc * xc), axis=-1, keepdims=True))  # MUL, not SQUARE
            eps, gamma = self.eps, self.gamma
        inv = fq("inv_std", tf.math.rsqrt(fq("variance_eps", var + fq("eps", tf.constant(eps, tf.float32)))))
        y = fq("scaled", fq("normalized", xc * inv) * fq("gamma", gamma))
        return fq("output", y + fq("beta", self.beta))


class Attention(Quantizable):
    """Multi-head attention with the softmax scale folded into the query projection."""

    def __init__(self, d_model: int, heads: int, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.heads, self.head_dim = d_model, heads, d_model // heads
        self.q_proj = Linear(d_model, scale=self.head_dim ** -0.5, name="q_proj")
        self.k_proj = Linear(d_model, name="k_proj")
        self.v_proj = Linear(d_model, name="v_proj")
        self.out_proj = Linear(d_model, name="out_proj")
        self.dropout = tf_keras.layers.Dropout(dropout)

    def _split(self, x):  # (B, L, D) -> (B, H, L, Dh)
        b = tf.shape(x)[0] if x.shape[0] is None else x.shape[0]
        x = tf.reshape(x, (b, x.shape[1], self.heads, self.head_dim))
        return tf.transpose(x, (0, 2, 1, 3))

    def call(self, query, key_value, bias, training=False):
        """query (B,Lq,D), key_value (B,Lk,D), bias (B,Lk) or (B,Lq,Lk) with values in {-c, 0}."""
        q = self.queries(query, training)  # built first: variables are created (and initialized) in this order
        return self.attend(q, *self.keys_values(key_value, training), bias, training)

    def queries(self, query, training=False):
        """(B,Lq,D) -> per-head queries (B,H,Lq,Dh), the softmax scale folded in."""
        return self._split(self.q_proj(query, training=training))

    def keys_values(self, key_value, training=False):
        """(B,Lk,D) -> per-head keys and values (B,H,Lk,Dh): what a decoding cache keeps."""
        return (self._split(self.k_proj(key_value, training=training)),
                self._split(self.v_proj(key_value, training=training)))

    def attend(self, q, k, v, bias, training=False):
        """Per-head queries (B,H,Lq,Dh) against keys and values (B,H,Lk,Dh) -> (B,Lq,D)."""
        # Name scopes give the TFLite tensors readable roles (scores, masked_scores, softmax, context) for
        # the localization table.
        with tf.name_scope("scores"):
            scores = self.fq("scores", tf.matmul(q, k, transpose_b=True), training)  # (B, H, Lq, Lk)
        bias = bias[:, None, None, :] if bias.shape.rank == 2 else bias[:, None, :, :]
        with tf.name_scope("masked_scores"):
            masked = self.fq("masked_scores", scores + bias, training)
        with tf.name_scope("softmax"):
            probs = self.dropout(self.fq("softmax", tf.nn.softmax(masked, axis=-1), training), training=training)
        with tf.name_scope("context"):
            ctx = self.fq("context", tf.matmul(probs, v), training)  # (B, H, Lq, Dh)
        ctx = tf.transpose(ctx, (0, 2, 1, 3))
        b = tf.shape(ctx)[0] if ctx.shape[0] is None else ctx.shape[0]
        return self.out_proj(tf.reshape(ctx, (b, ctx.shape[1], self.d_model)), training=training)


class FeedForward(Quantizable):
    def __init__(self, d_model: int, ffn_dim: int, activation: str, dropout: float, **kwargs):
        super().__init__(**kwargs)
        self.fc1 = Linear(ffn_dim, name="fc1")
        self.fc2 = Linear(d_model, name="fc2")
        self.act = activation_fn(activation)
        self.dropout = tf_keras.layers.Dropout(dropout)

    def call(self, x, training=False):
        h = self.fq("activation", self.act(self.fc1(x, training=training)), training)
        return self.fc2(self.dropout(h, training=training), training=training)


class TokenEmbedding(Quantizable):
    """Shared token table (V, D); GATHER for lookup and its transpose for tied logits.

    The embedding scale is folded into the gathered table, so under QAT the lookup has its own per-tensor range
    (a constant separate from the tied output projection, which is quantized per channel)."""

    def __init__(self, vocab_size: int, d_model: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.d_model = vocab_size, d_model

    def build(self, input_shape):
        self.table = self.add_weight("table", shape=(self.vocab_size, self.d_model),
                                     initializer=tf_keras.initializers.RandomNormal(stddev=self.d_model ** -0.5))
        super().build(input_shape)

    def call(self, ids, scale: float = 1.0, training=False):
        table = self.table * scale if scale != 1.0 else self.table
        return tf.gather(self.fq("table", table, training), ids)


class PositionEmbedding(Quantizable):
    """Sinusoidal (constant) or learned (variable, with an index offset as in BART) positions."""

    def __init__(self, kind: str, max_positions: int, d_model: int, offset: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.kind, self.max_positions, self.d_model, self.offset = kind, max_positions, d_model, offset

    def build(self, input_shape):
        if self.kind == "learned":
            self.table = self.add_weight("table", shape=(self.max_positions + self.offset, self.d_model),
                                         initializer=tf_keras.initializers.RandomNormal(stddev=0.02))
        else:
            self.table = tf.constant(sinusoidal_table(self.max_positions, self.d_model))
        super().build(input_shape)

    def call(self, positions, training=False):
        table = self.fq("table", self.table, training)
        return tf.gather(table, positions + self.offset if self.offset else positions)


def embed_scale(cfg) -> float:
    return math.sqrt(cfg.d_model) if cfg.scale_embedding else 1.0
