"""Hugging Face Marian / BART checkpoints built offline from tiny configs with random weights: the deployment graphs
reproduce the transformers PyTorch model (first-step and teacher-forced logits, greedy outputs), and export then
re-import reproduces the weights exactly."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (dev extra, torch==2.13.0) checks parity against transformers")
from transformers import BartConfig, BartForConditionalGeneration, MarianConfig, MarianMTModel  # noqa: E402

from s2s_qat.interop.hf import CheckpointError, export_marian, hf_state, import_checkpoint, read_state  # noqa: E402
from s2s_qat.models import teacher_forced_logits  # noqa: E402
from s2s_qat.runtime import KerasBackend, left_pad_prefix  # noqa: E402

MAX_ABS = 1e-4
S, T, V = 10, 8, 48
ROWS = 8
_COMMON = dict(vocab_size=V, d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
               decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=16,
               dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
CHECKPOINTS = {
    "marian_swish_scaled_tied": (MarianMTModel, MarianConfig, dict(activation_function="swish", scale_embedding=True)),
    "marian_gelu_unscaled_untied": (MarianMTModel, MarianConfig, dict(activation_function="gelu", scale_embedding=False,
                                                                      tie_word_embeddings=False)),
    "marian_relu_scaled_untied": (MarianMTModel, MarianConfig, dict(activation_function="relu", scale_embedding=True,
                                                                    tie_word_embeddings=False)),
    "bart_gelu_learned_lnemb": (BartForConditionalGeneration, BartConfig, dict(activation_function="gelu")),
}
MARIAN_IDS = dict(pad_token_id=V - 1, eos_token_id=0, decoder_start_token_id=V - 1)


def _checkpoint(name: str, directory, seed: int = 0):
    model_cls, config_cls, extra = CHECKPOINTS[name]
    ids = MARIAN_IDS if model_cls is MarianMTModel else {}
    torch.manual_seed(seed)
    model = model_cls(config_cls(**_COMMON, **ids, **extra)).eval()
    with torch.no_grad():  # random biases and LayerNorm parameters (zeros and ones by default) so every weight matters
        for key, p in model.named_parameters():
            if key.endswith(".bias") or "layer_norm" in key or "layernorm" in key:
                p.add_(torch.randn_like(p) * 0.1)
        model.final_logits_bias.add_(torch.randn_like(model.final_logits_bias) * 0.1)
        # transformers 5 unties every Marian table when tie_word_embeddings is false; checkpoints converted from
        # Marian (and saved by transformers 4) hold one shared table in all three places, as the project models it
        for table in (model.model.encoder.embed_tokens, model.model.decoder.embed_tokens):
            table.weight.copy_(model.model.shared.weight)
    model.save_pretrained(directory)
    return model


def _sources(cfg, seed=0):
    rng = np.random.default_rng(seed)
    special = {cfg.pad_token_id, cfg.eos_token_id, cfg.bos_token_id}
    normal = [t for t in range(cfg.vocab_size) if t not in special]
    ids = np.full((ROWS, S), cfg.pad_token_id, np.int32)
    for i in range(ROWS):
        n = int(rng.integers(2, S + 1))
        ids[i, :n - 1] = rng.choice(normal, n - 1)
        ids[i, n - 1] = cfg.eos_token_id
    return ids, (ids != cfg.pad_token_id).astype(np.int32)


def _torch_greedy(model, ids, mask, start, eos, steps):
    out = [start]
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask),
                           decoder_input_ids=torch.tensor([out])).logits[0, -1].numpy()
            out.append(int(np.argmax(logits)))
            if out[-1] == eos:
                break
    return out[1:]


@pytest.mark.parametrize("name", sorted(CHECKPOINTS))
def test_imported_checkpoint_matches_transformers(name, tmp_path):
    model = _checkpoint(name, tmp_path / "hf")
    core = import_checkpoint(tmp_path / "hf", S, T)
    cfg = core.cfg
    ids, mask = _sources(cfg)
    keras = KerasBackend(core)
    rng = np.random.default_rng(1)
    for i in range(ROWS):
        src, m = ids[i:i + 1], mask[i:i + 1]
        # first step: the decoder_step graph on the start token alone
        d_ids, d_mask = left_pad_prefix([cfg.bos_token_id], T, cfg.pad_token_id)
        ours = keras.decode_step(d_ids, d_mask, keras.encode(src, m), m)
        with torch.no_grad():
            theirs = model(input_ids=torch.tensor(src, dtype=torch.long), attention_mask=torch.tensor(m),
                           decoder_input_ids=torch.tensor([[cfg.bos_token_id]])).logits[0, -1].numpy()
        assert np.abs(ours - theirs).max() <= MAX_ABS, (name, i, np.abs(ours - theirs).max())
        # teacher forced: a random target prefix, right-padded
        n = int(rng.integers(2, T + 1))
        dec = np.full((1, T), cfg.pad_token_id, np.int32)
        dec[0, 0] = cfg.bos_token_id
        dec[0, 1:n] = rng.integers(3, cfg.vocab_size - 1, n - 1)
        dmask = np.zeros_like(dec)
        dmask[0, :n] = 1
        ours = teacher_forced_logits(core, src, m, dec, dmask).numpy()[0, :n]
        with torch.no_grad():
            theirs = model(input_ids=torch.tensor(src, dtype=torch.long), attention_mask=torch.tensor(m),
                           decoder_input_ids=torch.tensor(dec[:, :n], dtype=torch.long)).logits[0].numpy()
        assert np.abs(ours - theirs).max() <= MAX_ABS, (name, i, np.abs(ours - theirs).max())
        # greedy through the host loop's backend vs step-by-step argmax of the PyTorch model
        from s2s_qat.runtime import GenerationSettings, greedy

        settings = GenerationSettings(bos_id=cfg.bos_token_id, eos_id=cfg.eos_token_id, pad_id=cfg.pad_token_id,
                                      max_new_tokens=T)
        hyp = greedy(keras, keras.encode(src, m), m, settings)
        assert list(hyp.tokens) == _torch_greedy(model, src, m, cfg.bos_token_id, cfg.eos_token_id, T), (name, i)


@pytest.mark.parametrize("name", ["marian_swish_scaled_tied", "marian_gelu_unscaled_untied"])
def test_export_then_import_reproduces_the_weights_exactly(name, tmp_path):
    _checkpoint(name, tmp_path / "hf", seed=3)
    core = import_checkpoint(tmp_path / "hf", S, T)
    export_marian(core, tmp_path / "out")
    again = import_checkpoint(tmp_path / "out", S, T)
    assert again.cfg == core.cfg
    for a, b in zip(core.weights, again.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # transformers loads the export and computes the same logits as the original checkpoint
    original = MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    exported = MarianMTModel.from_pretrained(tmp_path / "out").eval()
    ids = torch.tensor([[5, 6, 7, 0]])
    with torch.no_grad():
        a = original(input_ids=ids, decoder_input_ids=torch.tensor([[V - 1, 9]])).logits
        b = exported(input_ids=ids, decoder_input_ids=torch.tensor([[V - 1, 9]])).logits
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    state = hf_state(core)
    assert set(read_state(tmp_path / "out")) <= set(state)


def test_bad_checkpoints_fail_with_every_problem_listed(tmp_path):
    _checkpoint("marian_swish_scaled_tied", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config.update(decoder_attention_heads=4, activation_function="tanh", decoder_vocab_size=V + 1)
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        import_checkpoint(tmp_path / "hf", S, 40)
    text = str(err.value)
    for part in ("encoder_attention_heads (2) != decoder_attention_heads (4)", "activation_function: got 'tanh'",
                 "decoder_vocab_size (49) != vocab_size (48)", "target_length 40 exceeds the checkpoint's "
                 "max_position_embeddings (16)"):
        assert part in text, text

    from safetensors.numpy import load_file, save_file

    _checkpoint("marian_relu_scaled_untied", tmp_path / "w")
    state = load_file(str(tmp_path / "w" / "model.safetensors"))
    del state["model.decoder.layers.1.fc2.bias"]
    state["model.encoder.layers.0.extra.weight"] = np.zeros((2, 2), np.float32)
    state["model.encoder.layers.0.fc1.weight"] = np.zeros((31, 16), np.float32)
    save_file(state, str(tmp_path / "w" / "model.safetensors"))
    with pytest.raises(CheckpointError) as err:
        import_checkpoint(tmp_path / "w", S, T)
    text = str(err.value)
    assert "missing weight model.decoder.layers.1.fc2.bias" in text
    assert "unexpected weight model.encoder.layers.0.extra.weight (shape (2, 2))" in text
    assert "weight model.encoder.layers.0.fc1.weight has shape (31, 16); expected (32, 16)" in text
