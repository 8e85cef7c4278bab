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


@pytest.fixture(scope="module")
def codec_and_core(tmp_path_factory):
    from s2s_qat.data import generate_corpus
    from s2s_qat.recipe import parse_recipe
    from s2s_qat.tokenizer import TextCodec, save_tokenizer, train_tokenizer

    rows = list(generate_corpus(3, 300, {"year": 1.0, "ordinal": 1.0}, 1, 1, (0, 2)))
    tok = train_tokenizer(parse_recipe({"name": "x", "tokenizer": {"vocab_size": 150}}).tokenizer,
                          (t for r in rows for t in (r["source"], r["target"])))
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    save_tokenizer(tok, path)
    codec = TextCodec.load(path)
    core = tiny_core(seed=8, vocab_size=codec.vocab_size, source_length=12, target_length=12,
                     max_position_embeddings=12)
    return codec, core, rows, path


def test_calibration_sets(codec_and_core):
    from s2s_qat.export.calibration import generation_state_calibration, naive_calibration

    codec, core, rows, _ = codec_and_core
    keras = KerasBackend(core)
    sources = [r["source"] for r in rows[:6]]
    naive = naive_calibration(keras, codec, sources)
    assert len(naive.encoder) == len(naive.decoder) == 6
    assert all(r["decoder_attention_mask"].sum() == 1 and r["decoder_input_ids"][0, -1] == codec.bos_id
               for r in naive.decoder)
    teacher = [[9, 10, 11, 12, 13, 14, 15, 16]] * 6
    gen = generation_state_calibration(keras, codec, sources, [r["target"] for r in rows[:6]], teacher, k=5)
    assert len(gen.encoder) == 6 and len(gen.decoder) == 30
    lengths = [int(r["decoder_attention_mask"].sum()) for r in gen.decoder[:5]]
    assert lengths[0] == 1 and max(lengths) > 3  # BOS only ... near the end
    assert gen.decoder[1]["decoder_input_ids"][0, -lengths[1]] == codec.bos_id
    memory = np.asarray(keras.encode(gen.encoder[0]["input_ids"], gen.encoder[0]["attention_mask"]))
    np.testing.assert_allclose(gen.decoder[0]["encoder_hidden_states"], memory, atol=1e-6)


def test_calibration_set_round_trips_and_loads_each_array_once(codec_and_core, tmp_path):
    from s2s_qat.export.calibration import CalibrationSet, naive_calibration

    codec, core, rows, _ = codec_and_core
    calib = naive_calibration(KerasBackend(core), codec, [r["source"] for r in rows[:5]])
    calib.save(tmp_path / "c.npz")
    loaded = CalibrationSet.load(tmp_path / "c.npz")
    for a, b in zip(calib.decoder + calib.encoder, loaded.decoder + loaded.encoder):
        assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    # Rows are views of one array per input: reading the array per row once kept a full copy alive per row
    # (12.8 GB for the default recipe's generation-state set, an OOM kill on the bench).
    memories = [r["encoder_hidden_states"] for r in loaded.decoder]
    assert all(m.base is memories[0].base and m.base is not None for m in memories)


def test_artifacts_and_manifest(codec_and_core, tmp_path):
    import hashlib
    import json

    from s2s_qat.export.calibration import naive_calibration
    from s2s_qat.export.manifest import build_manifest, write_artifacts

    codec, core, rows, tok_path = codec_and_core
    calib = naive_calibration(KerasBackend(core), codec, [r["source"] for r in rows[:16]])
    enc_q = convert(build_encoder(core), "int8", lambda: iter(calib.encoder))
    dec_q = convert(build_decoder_step(core), "int8", lambda: iter(calib.decoder))
    manifest = build_manifest(enc_q, dec_q, codec, "int8", "abc")
    write_artifacts(tmp_path / "artifacts", enc_q, dec_q, tok_path, manifest)
    written = json.loads((tmp_path / "artifacts" / "manifest.json").read_text())
    assert written == json.loads(json.dumps(manifest))
    for kind in ("encoder", "decoder_step"):
        blob = (tmp_path / "artifacts" / f"{kind}.tflite").read_bytes()
        assert written["graphs"][kind]["sha256"] == hashlib.sha256(blob).hexdigest()
        assert written["graphs"][kind]["float_ops"] == 0
    b = written["boundary"]
    assert b["encoder_output"]["dtype"] == b["decoder_input"]["dtype"] == "INT8"
    assert b["identity"] == (b["encoder_output"] == b["decoder_input"])
    assert written["special_tokens"] == {"pad": 0, "bos": 1, "eos": 2, "unk": 3}
    assert written["graphs"]["decoder_step"]["inputs"]["decoder_input_ids"]["dtype"] == "INT32"
    assert (tmp_path / "artifacts" / "tokenizer.json").read_bytes() == tok_path.read_bytes()
