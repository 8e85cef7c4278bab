"""TFLite export and runtime: requantization arithmetic, float parity, full-INT8 inventory, inspect."""
import numpy as np
import pytest

from harness import TINY, source_batch, tiny_core
from s2s_qat import inspect as inspect_cli
from s2s_qat.export import convert, inventory
from s2s_qat.models import build_decoder_step, build_encoder
from s2s_qat.runtime import KerasBackend, left_pad_prefix
from s2s_qat.runtime.quantization import dequantize, quantize, requantize
from s2s_qat.runtime.tflite_backend import TensorContract, TFLiteBackend, boundary

FLOAT_TFLITE_VS_KERAS_ATOL = 1e-4


def test_requantize_by_hand():
    q_e = np.array([-128, -1, 0, 5, 127], np.int8)
    # scale_e 0.5, zp_e 3 -> real = 0.5 * (q - 3) = [-65.5, -2, -1.5, 1, 62]; scale_d 0.25, zp_d -10
    # q_d = round(real / 0.25 - 10) = [-272 -> -128, -18, -16, -6, 238 -> 127]
    np.testing.assert_array_equal(requantize(q_e, 0.5, 3, 0.25, -10), [-128, -18, -16, -6, 127])
    # Coarser destination: real / 2 + 0 = [-32.75 -> -33, -1, -0.75 -> -1, 0.5 -> 0 (half to even), 31]
    np.testing.assert_array_equal(requantize(q_e, 0.5, 3, 2.0, 0), [-33, -1, -1, 0, 31])
    same = requantize(q_e, 0.5, 3, 0.5, 3)
    np.testing.assert_array_equal(same, q_e)  # identical parameters: raw bytes pass through
    assert same.dtype == np.int8


def test_quantize_dequantize_by_hand():
    np.testing.assert_array_equal(quantize(np.array([-100.0, -0.26, 0.0, 0.26, 100.0]), 0.1, -5), [-128, -8, -5, -2, 127])
    np.testing.assert_allclose(dequantize(np.array([-128, -5, 127], np.int8), 0.1, -5), [-12.3, 0.0, 13.2], atol=1e-6)


def test_boundary_between_float_and_int8_sides():
    f = TensorContract(np.dtype(np.float32), (1, 2), 0.0, 0)
    q = TensorContract(np.dtype(np.int8), (1, 2), 0.5, 1)
    np.testing.assert_array_equal(boundary(np.array([[1.0, -2.0]], np.float32), f, q), [[3, -3]])
    np.testing.assert_allclose(boundary(np.array([[3, -3]], np.int8), q, f), [[1.0, -2.0]])


@pytest.fixture(scope="module")
def tiny():
    core = tiny_core(seed=7)
    return core, build_encoder(core), build_decoder_step(core)


def _representative_pairs(core, n=24):
    ids, mask = source_batch(core.cfg, n, seed=5)
    keras = KerasBackend(core)
    rng = np.random.default_rng(0)
    enc_rows, dec_rows = [], []
    for i in range(n):
        enc_rows.append({"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]})
        memory = keras.encode(ids[i:i + 1], mask[i:i + 1]).numpy()
        prefix = [1] + list(rng.integers(4, core.cfg.vocab_size, int(rng.integers(0, core.cfg.target_length))))
        d_ids, d_mask = left_pad_prefix(prefix, core.cfg.target_length, 0)
        dec_rows.append({"decoder_input_ids": d_ids, "decoder_attention_mask": d_mask,
                         "encoder_hidden_states": memory, "encoder_attention_mask": mask[i:i + 1]})
    return enc_rows, dec_rows


def test_float_tflite_matches_keras(tiny):
    core, enc, dec = tiny
    backend = TFLiteBackend(convert(enc, "float"), convert(dec, "float"))
    keras = KerasBackend(core)
    ids, mask = source_batch(TINY, 4, seed=9)
    worst = 0.0
    for i in range(4):
        memory_t = backend.encode(ids[i:i + 1], mask[i:i + 1])
        memory_k = keras.encode(ids[i:i + 1], mask[i:i + 1])
        for prefix in ([1], [1, 7, 9], [1, 5, 6, 7, 8, 9]):
            d_ids, d_mask = left_pad_prefix(prefix, TINY.target_length, 0)
            a = backend.decode_step(d_ids, d_mask, memory_t, mask[i:i + 1])
            b = keras.decode_step(d_ids, d_mask, memory_k, mask[i:i + 1])
            worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= FLOAT_TFLITE_VS_KERAS_ATOL, worst


def test_full_int8_ptq_has_no_float_ops_and_int8_boundary(tiny):
    core, enc, dec = tiny
    enc_rows, dec_rows = _representative_pairs(core)
    enc_q = convert(enc, "int8", lambda: iter(enc_rows))
    dec_q = convert(dec, "int8", lambda: iter(dec_rows))
    for blob in (enc_q, dec_q):
        inv = inventory(blob)
        assert inv.float_ops == 0 and inv.float_tensors == [], inv.float_tensors
        assert inv.quantize_ops == 0 and not inv.dynamic_tensors and not inv.custom_ops
    inv_e, inv_d = inventory(enc_q), inventory(dec_q)
    assert {t["name"]: t["dtype"] for t in inv_e.inputs} == {"serving_default_input_ids:0": "INT32",
                                                            "serving_default_attention_mask:0": "INT32"}
    assert [t["dtype"] for t in inv_e.outputs] == ["INT8"]
    dtypes = {t["name"].split("serving_default_")[-1]: t["dtype"] for t in inv_d.inputs}
    assert dtypes == {"decoder_input_ids:0": "INT32", "decoder_attention_mask:0": "INT32",
                      "encoder_hidden_states:0": "INT8", "encoder_attention_mask:0": "INT32"}
    assert [t["dtype"] for t in inv_d.outputs] == ["INT8"]
    # The int8 backend runs and its first-step logits stay close to FP32 on a tiny random model.
    backend, keras = TFLiteBackend(enc_q, dec_q), KerasBackend(core)
    ids, mask = source_batch(TINY, 1, seed=5)
    d_ids, d_mask = left_pad_prefix([1], TINY.target_length, 0)
    a = backend.decode_step(d_ids, d_mask, backend.encode(ids, mask), mask)
    b = keras.decode_step(d_ids, d_mask, keras.encode(ids, mask), mask)
    cosine = float(np.dot(a - a.mean(), b - b.mean()) / np.linalg.norm(a - a.mean()) / np.linalg.norm(b - b.mean()))
    assert cosine > 0.95, cosine


def test_inspect_cli(tiny, tmp_path, capsys):
    _, enc, _ = tiny
    good = tmp_path / "encoder.tflite"
    good.write_bytes(convert(enc, "float"))
    assert inspect_cli.main([str(good)]) == 0
    out = capsys.readouterr().out
    assert "FULLY_CONNECTED" in out and "float activation tensor(s)" in out
    assert inspect_cli.main([str(good), "--strict"]) == 1
    capsys.readouterr()
    corrupt = tmp_path / "corrupt.tflite"
    corrupt.write_bytes(good.read_bytes()[:200])
    assert inspect_cli.main([str(corrupt)]) == 2
    assert "damaged TFLite model" in capsys.readouterr().err
    text = tmp_path / "notes.tflite"
    text.write_text("hello, not a model")
    assert inspect_cli.main([str(text)]) == 2
    assert "is not a TFLite model" in capsys.readouterr().err
    assert inspect_cli.main([str(tmp_path / "missing.tflite")]) == 2
