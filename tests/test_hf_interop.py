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


# === Tokenizers and the convert / translate commands ===

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "twenty one apples", "the 3rd of May",
         "she reads books at night", "we walk to the station"] * 20


def _marian_tokenizer(directory):
    """A MarianTokenizer built offline: a SentencePiece model trained here, vocab.json with Marian's ids."""
    import sentencepiece as spm
    from transformers import MarianTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "corpus.txt").write_text("\n".join(TEXTS))
    spm.SentencePieceTrainer.train(input=str(directory / "corpus.txt"), model_prefix=str(directory / "sp"),
                                   vocab_size=32, model_type="unigram", bos_id=-1, eos_id=0, unk_id=1, pad_id=-1,
                                   minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(directory / "sp.model"))
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    vocab["<pad>"] = len(vocab)
    (directory / "vocab.json").write_text(json.dumps(vocab))
    return MarianTokenizer(source_spm=str(directory / "sp.model"), target_spm=str(directory / "sp.model"),
                           vocab=str(directory / "vocab.json"))


def _bart_tokenizer(directory):
    """A BART-style tokenizer built offline: byte-level BPE trained here, `<s> pieces </s>` post-processing and
    BART's special ids (<s>=0 <pad>=1 </s>=2 <unk>=3)."""
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(TEXTS, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                            show_progress=False)
    bpe.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")


def test_checkpoint_tokenizers_keep_their_own_special_tokens(tmp_path):
    from s2s_qat.tokenizer import TextCodec, save_checkpoint_tokenizer

    marian = _marian_tokenizer(tmp_path / "m")
    pad = len(marian) - 1
    save_checkpoint_tokenizer(marian, tmp_path / "m_codec", pad, pad, 0)
    codec = TextCodec.load(tmp_path / "m_codec")
    ids = codec.encode_source("the cat sat", 12).ids
    assert ids == marian("the cat sat")["input_ids"] and ids[-1] == 0 and codec.bos_id == codec.pad_id == pad
    short = codec.encode_source("the cat sat on the mat", 3)
    assert short.truncated and len(short.ids) == 3 and short.ids[-1] == 0
    assert codec.decode(ids) == "the cat sat"

    bart = _bart_tokenizer(tmp_path / "b")
    save_checkpoint_tokenizer(bart, tmp_path / "b_codec", 1, 2, 2)
    codec = TextCodec.load(tmp_path / "b_codec")
    ids = codec.encode_target("a dog ran", 16).ids
    assert ids[0] == 0 and ids[-1] == 2 and ids == bart(text_target="a dog ran")["input_ids"]
    assert codec.decode(ids) == "a dog ran" and (codec.bos_id, codec.pad_id) == (2, 1)


def _marian_with_tokenizer(directory, seed=0):
    tokenizer = _marian_tokenizer(directory / "tok")
    v = len(tokenizer)
    torch.manual_seed(seed)
    # init_std 0.4: a random model with small weights ignores its source; larger ones give varied outputs
    config = MarianConfig(**dict(_COMMON, vocab_size=v, max_position_embeddings=64), init_std=0.4, pad_token_id=v - 1, eos_token_id=0, decoder_start_token_id=v - 1,
                          activation_function="swish", scale_embedding=True)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, 0] += 2.0  # EOS likely: outputs of different lengths
        model.final_logits_bias[0, v - 1] -= 20.0  # the pad token is never generated, as in a trained model
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return model, tokenizer


def test_convert_hf_then_translate_gives_the_transformers_greedy_outputs(tmp_path, capsys):
    from s2s_qat import convert, translate

    model, tokenizer = _marian_with_tokenizer(tmp_path / "hf")
    texts = ["the cat sat", "a dog ran in the park", "twenty one apples", "the 3rd of May", "she reads",
             "we walk to the station", "the mat", "books at night"]
    assert convert.main(["hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run"), "--source-length", "48",
                         "--target-length", str(T)]) == 0
    capsys.readouterr()
    assert translate.main([str(tmp_path / "run"), "--backend", "keras", *texts]) == 0
    ours = capsys.readouterr().out.splitlines()
    theirs = []
    for text in texts:
        enc = tokenizer(text, return_tensors="pt")
        tokens = _torch_greedy(model, enc["input_ids"].numpy(), enc["attention_mask"].numpy(),
                               model.config.decoder_start_token_id, 0, T)
        theirs.append(tokenizer.decode(tokens, skip_special_tokens=True))
    assert ours == theirs
    assert len(set(theirs)) >= 3 and "" in theirs  # varied outputs, one ended by EOS at once
    assert convert.main(["hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    assert translate.main([str(tmp_path / "run"), "--backend", "tflite", "x"]) == 2  # no artifacts/ yet
    assert "no encoder.tflite" in capsys.readouterr().err


def test_to_hf_writes_a_marian_model_that_transformers_generates_with(tmp_path, capsys):
    from transformers import AutoTokenizer

    from s2s_qat import convert, translate
    from s2s_qat.pipeline import load_teacher

    paths = _trained_here_run(tmp_path / "run")
    core, _ = load_teacher(paths.root)
    assert convert.main(["to-hf", str(paths.root), "--out", str(tmp_path / "hf")]) == 0
    model = MarianMTModel.from_pretrained(tmp_path / "hf").eval()
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = ["the cat sat", "a dog ran", "twenty one", "May", "books at night", "we walk", "the park", "apples"]
    capsys.readouterr()
    assert translate.main([str(paths.root), *texts]) == 0
    ours = capsys.readouterr().out.splitlines()
    theirs = []
    for text in texts:
        ids = hf_tok(text, add_special_tokens=False)["input_ids"] + [core.cfg.eos_token_id]
        out = model.generate(input_ids=torch.tensor([ids]), num_beams=1, do_sample=False, max_new_tokens=T)
        theirs.append(hf_tok.decode(out[0, 1:], skip_special_tokens=True).strip())
    assert ours == theirs and len(set(theirs)) >= 3
    assert convert.main(["to-hf", str(paths.root), "--out", str(tmp_path / "hf")]) == 2


def test_recipe_with_an_imported_teacher_runs_the_pipeline_on_the_checkpoint(tmp_path):
    """`teacher: {source: hf, path}`: the checkpoint's tokenizer and weights go through the pipeline; the FP32 row's
    outputs are the transformers model's greedy outputs; a changed checkpoint file imports again."""
    import yaml

    from s2s_qat import train as train_cli
    from s2s_qat import translate

    model, tokenizer = _marian_with_tokenizer(tmp_path / "hf")
    recipe = {"name": "imported", "seed": 3,
              "data": {"tn_en": {"num_examples": 300, "classes": {"year": 1.0}, "carrier_words": [0, 2]},
                       "splits": {"validation": 20, "test": 12, "calibration": 8}},
              "teacher": {"source": "hf", "path": str(tmp_path / "hf")},
              "model": {"source_length": 48, "target_length": T},
              "eval": {"sensitivity_sources": 4},
              "ladder": {"variants": ["fp32", "ptq-int8"], "calibration_sources": 8, "localize": False}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    run = tmp_path / "run"
    assert train_cli.main([str(tmp_path / "r.yaml"), "--run-dir", str(run), "--no-progress"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["training"]["stop_reason"] == "imported" and report["training"]["best_val_loss"] > 0
    for example in report["examples"]:
        enc = tokenizer(example["source"], return_tensors="pt")
        tokens = _torch_greedy(model, enc["input_ids"].numpy(), enc["attention_mask"].numpy(),
                               model.config.decoder_start_token_id, 0, T)
        assert example["output"] == tokenizer.decode(tokens, skip_special_tokens=True), example
    # the full-INT8 artifacts carry the checkpoint's own tokenizer files, and translate reads them
    assert (run / "artifacts" / "tokenizer" / "codec.json").is_file()
    assert (run / "artifacts" / "tokenizer" / "source.spm").is_file()
    assert translate.main([str(run / "artifacts"), "the cat sat", "twenty one apples"]) == 0
    stamp = (run / "teacher" / "stage.json").read_text()
    assert train_cli.main([str(tmp_path / "r.yaml"), "--run-dir", str(run), "--no-progress"]) == 0
    assert (run / "teacher" / "stage.json").read_text() == stamp  # unchanged checkpoint: skipped


def _trained_here_run(directory):
    """A run directory as the toolkit writes it (its own tokenizer, <pad> = 0, decoding from <s>), tiny weights."""
    from harness import tiny_core
    from s2s_qat.pipeline import RunPaths, save_model
    from s2s_qat.recipe import TokenizerConfig
    from s2s_qat.tokenizer import save_tokenizer, train_tokenizer

    tok = train_tokenizer(TokenizerConfig(vocab_size=60), TEXTS)
    paths = RunPaths(directory)
    save_tokenizer(tok, paths.tokenizer / "tokenizer.json")
    core = tiny_core(seed=5, vocab_size=tok.get_vocab_size(), target_length=T, source_length=32,
                     max_position_embeddings=32)
    for v in core.weights:  # larger weights: a random tiny model with small ones ignores its source
        if "kernel" in v.name or "table" in v.name:
            v.assign(v.numpy() * 1.5)
    bias = core.final_logits_bias.numpy()
    bias[core.cfg.pad_token_id] -= 20.0  # never generated, as in a trained model
    core.final_logits_bias.assign(bias)
    save_model(core, paths.teacher_model)
    return paths


@pytest.mark.parametrize("origin", ["imported_marian", "trained_here"])
def test_ctranslate2_runs_an_exported_teacher_with_the_same_greedy_outputs(origin, tmp_path):
    """Export a teacher (`to-hf`), convert with CTranslate2: its float32 greedy outputs are the deployment graphs'.
    An imported Marian checkpoint follows Marian's conventions (<pad> last, decoding from its zero embedding); a
    teacher trained here does not, and converts with its own vocabulary and start token."""
    ctranslate2 = pytest.importorskip("ctranslate2", reason="ctranslate2 (dev extra) is the benchmark's baseline")
    from s2s_qat import convert
    from s2s_qat.interop.ct2 import convert_to_ctranslate2, follows_marian_convention
    from s2s_qat.pipeline import load_teacher
    from s2s_qat.recipe import RuntimeConfig
    from s2s_qat.runtime import Translator

    if origin == "imported_marian":
        _marian_with_tokenizer(tmp_path / "hf")
        assert convert.main(["hf", str(tmp_path / "hf"), "--out", str(tmp_path / "run"), "--source-length", "32",
                             "--target-length", str(T)]) == 0
    else:
        _trained_here_run(tmp_path / "run")
    assert convert.main(["to-hf", str(tmp_path / "run"), "--out", str(tmp_path / "out")]) == 0
    assert follows_marian_convention(tmp_path / "out") == (origin == "imported_marian")
    convert_to_ctranslate2(tmp_path / "out", tmp_path / "ct2", "float32")
    core, codec = load_teacher(tmp_path / "run")
    ours = Translator.create(codec, KerasBackend(core), RuntimeConfig())
    ct2 = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu")
    texts = ["the cat sat", "a dog ran in the park", "twenty one apples", "the 3rd of May", "she reads",
             "we walk to the station", "the mat", "books at night"]
    outputs = []
    for text in texts:
        pieces = codec.tokenizer.convert_ids_to_tokens(codec.encode_source(text, 32).ids)
        result = ct2.translate_batch([pieces], beam_size=1, max_decoding_length=T, min_decoding_length=0)
        outputs.append(codec.decode(codec.tokenizer.convert_tokens_to_ids(result[0].hypotheses[0])))
    assert outputs == [ours.translate(t) for t in texts]
    assert len(set(outputs)) >= 2
