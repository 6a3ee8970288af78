"""Tiny but real models, built offline into folders laid out as Hugging Face repos hold them.

Tests commit these folders to the fake hub (``hub.commit(repo_id, repo_files(folder))``) so that
the service downloads, converts and validates something the real tools accept, without the
internet. A seed fixes the weights: the same seed gives byte-identical files, another seed other
weights, hence another content hash.

torch and transformers are imported inside the builders: importing them costs seconds, and
modules that only need ``repo_files`` or the ONNX builder should not pay for it.
"""

from __future__ import annotations

import string
from pathlib import Path

__all__ = ["SENTENCES", "build_tiny_bert", "build_tiny_gpt2", "build_tiny_onnx", "repo_files"]

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A model is downloaded from the hub into the store.",
    "Every file is verified against its content hash.",
    "OpenVINO runs the converted model on the CPU.",
    "Tokenizers split text into pieces the model knows.",
    "Small models make the tests fast and repeatable.",
    "The converter writes an XML graph and a binary file of weights.",
    "Hello world, this is a tiny sentence for testing.",
    "Nothing here needs the internet to work.",
    "Seeds make the same weights every time.",
]

BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
GPT2_EOS = "<|endoftext|>"
# Also the longest input the tokenizers claim to handle: the position tables end there.
MAX_POSITIONS = 128
# Old enough for any recent reader: OpenVINO 2026.4 reads up to opset 28, others stop earlier.
ONNX_OPSET = 17


def repo_files(folder: Path) -> dict[str, Path]:
    """Every file under ``folder`` by its repo path (posix, relative), ready for ``hub.commit``."""
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def build_tiny_bert(dest: Path, seed: int = 0) -> Path:
    """A 2-layer BertModel (feature extraction) with a WordPiece tokenizer trained on SENTENCES."""
    import torch
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE, WordPiece
    from tokenizers.trainers import BpeTrainer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    dest = Path(dest)
    # The WordPiece trainer numbers its "##" pieces in hash-map order, which changes from run to
    # run, and ties between merges follow those numbers: its vocabulary is not reproducible.
    # Plain BPE numbers every piece by sorted character or merge rank, so train that and give
    # each learned piece a word-initial and a "##" continuation entry in a WordPiece vocabulary.
    normalizer = normalizers.BertNormalizer(lowercase=True)
    bpe = Tokenizer(BPE(unk_token="[UNK]"))
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = BpeTrainer(
        vocab_size=200,
        special_tokens=BERT_SPECIAL_TOKENS,
        # Digits and the like are not in SENTENCES; without them any number would be [UNK].
        initial_alphabet=list(string.ascii_lowercase + string.digits + string.punctuation),
        show_progress=False,
    )
    bpe.train_from_iterator(SENTENCES, trainer=trainer)
    learned = sorted(bpe.get_vocab().items(), key=lambda item: item[1])
    pieces = [piece for piece, _ in learned if piece not in BERT_SPECIAL_TOKENS]
    words = BERT_SPECIAL_TOKENS + pieces + [f"##{piece}" for piece in pieces]

    backend = Tokenizer(WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    # Marked special, so decoding can skip them and the tokenizer never splits them.
    backend.add_special_tokens(BERT_SPECIAL_TOKENS)
    tokenizer = BertTokenizerFast(tokenizer_object=backend, model_max_length=MAX_POSITIONS)

    config = BertConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
        # save_pretrained records this too; it is what the task (feature-extraction) is read off,
        # since optimum's task="auto" only asks the hub and refuses a local folder.
        architectures=["BertModel"],
    )
    torch.manual_seed(seed)
    model = BertModel(config).eval()
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def build_tiny_gpt2(dest: Path, seed: int = 0) -> Path:
    """A 2-layer GPT2LMHeadModel (text generation) with a byte-level BPE trained on SENTENCES."""
    import torch
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    dest = Path(dest)
    backend = Tokenizer(BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=400,
        special_tokens=[GPT2_EOS],
        # Every byte gets a token, so no input is ever unknown to a byte-level vocabulary.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(SENTENCES, trainer=trainer)
    tokenizer = GPT2TokenizerFast(
        tokenizer_object=backend,
        bos_token=GPT2_EOS,
        eos_token=GPT2_EOS,
        unk_token=GPT2_EOS,
        # GPT-2 has no padding token; batching needs one, and the end token is the usual stand-in.
        pad_token=GPT2_EOS,
        model_max_length=MAX_POSITIONS,
    )

    eos_id = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=backend.get_vocab_size(),
        n_positions=MAX_POSITIONS,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        architectures=["GPT2LMHeadModel"],
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id, max_new_tokens=16
    )
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)
    return dest


def build_tiny_onnx(dest: Path, seed: int = 0) -> Path:
    """``dest/model.onnx``: y = relu(x @ W + b), x float32 [batch, 16], y [batch, 8]."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((16, 8), dtype=np.float32)
    bias = rng.standard_normal(8, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xW"]),
            helper.make_node("Add", ["xW", "b"], ["xWb"]),
            helper.make_node("Relu", ["xWb"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")],
    )
    # make_model would stamp the newest IR version (14 in onnx 1.23), which older runtimes refuse
    # although the graph needs no more than what the opset implies.
    model = helper.make_model_gen_version(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="model-download-tests",
    )
    onnx.checker.check_model(model, full_check=True)
    path = dest / "model.onnx"
    onnx.save(model, path)
    return path
