#!/usr/bin/env python3
"""Convert a Whisper model in CTranslate2 format (model.bin) to whisper.cpp's ggml format.

Standard library only (no numpy, no torch). Deterministic: the same input gives a
byte-identical output, so scripts/models/SHA256SUMS can pin the result.

Input
  * CTranslate2 ``model.bin`` (binary version 6, spec ``WhisperSpec``), optionally split
    into several parts that are concatenated in the order given.
  * The openai-whisper source assets: ``mel_filters.npz`` (key ``mel_80``) and the
    tokenizer ranks ``gpt2.tiktoken`` (English-only models) or ``multilingual.tiktoken``.

Output (the layout whisper.cpp's models/convert-pt-to-ggml.py writes)
  int32 magic 0x67676d6c, 11 int32 hparams, int32 ftype;
  mel filters: int32 n_mel, int32 n_fft, n_mel*n_fft float32;
  tokens: int32 count, then (int32 len, bytes) each, in rank order;
  tensors: int32 n_dims, int32 name_len, int32 ftype, n_dims int32 dims (innermost first),
           name bytes, data (f16 for weights of rank >= 2, f32 for the rest).

Tensor mapping (CTranslate2 -> whisper.cpp/PyTorch), per layer N:
  encoder/conv{1,2}/{weight,bias}                      -> encoder.conv{1,2}.{weight,bias}
  encoder/position_encodings/encodings                 -> encoder.positional_embedding
  encoder/layer_N/self_attention/layer_norm/{gamma,beta} -> encoder.blocks.N.attn_ln.{weight,bias}
  encoder/layer_N/self_attention/linear_0 (fused Q|K|V) -> ...attn.{query,key,value}  (K has no bias)
  encoder/layer_N/self_attention/linear_1              -> ...attn.out
  encoder/layer_N/ffn/layer_norm                       -> ...mlp_ln
  encoder/layer_N/ffn/linear_{0,1}                     -> ...mlp.{0,2}
  encoder/layer_norm                                   -> encoder.ln_post
  decoder/embeddings/weight                            -> decoder.token_embedding.weight
  decoder/position_encodings/encodings                 -> decoder.positional_embedding
  decoder/layer_N/self_attention/...                   -> decoder.blocks.N.attn* (as encoder)
  decoder/layer_N/attention/layer_norm                 -> ...cross_attn_ln
  decoder/layer_N/attention/linear_0                   -> ...cross_attn.query
  decoder/layer_N/attention/linear_1 (fused K|V)       -> ...cross_attn.{key,value}  (K has no bias)
  decoder/layer_N/attention/linear_2                   -> ...cross_attn.out
  decoder/layer_N/ffn/...                              -> ...mlp_ln, mlp.0, mlp.2
  decoder/layer_norm                                   -> decoder.ln
Ignored: decoder/projection/weight (an alias of the embeddings; whisper ties them) and the
scalar settings (activation, num_heads -> used for hparams, alignment heads, ...).
"""

from __future__ import annotations

import argparse
import ast
import base64
import io
import os
import struct
import sys
import zipfile

GGML_MAGIC = 0x67676D6C
# CTranslate2 DataType ids (include/ctranslate2/types.h)
CT2_DTYPES = {0: ("float32", 4), 1: ("int8", 1), 2: ("int16", 2), 3: ("int32", 4), 4: ("float16", 2), 5: ("bfloat16", 2)}
N_AUDIO_CTX = 1500  # fixed by Whisper's 30 s window; checked against the tensor shape


class ConvertError(Exception):
    pass


class Var:
    __slots__ = ("name", "shape", "dtype", "data")

    def __init__(self, name: str, shape: tuple, dtype: str, data: bytes):
        self.name, self.shape, self.dtype, self.data = name, shape, dtype, data

    def scalar_int(self) -> int:
        fmt = {"int8": "<b", "int16": "<h", "int32": "<i"}[self.dtype]
        return struct.unpack(fmt, self.data)[0]


class MultiFile(io.RawIOBase):
    """Sequential reader over several files, as if concatenated (for split model.bin parts)."""

    def __init__(self, paths):
        self._files = [open(p, "rb") for p in paths]
        self._i = 0

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while self._i < len(self._files) and (n < 0 or len(out) < n):
            chunk = self._files[self._i].read(-1 if n < 0 else n - len(out))
            if not chunk:
                self._i += 1
                continue
            out += chunk
        return bytes(out)

    def close(self):
        for f in self._files:
            f.close()


def read_exact(f, n: int, what: str) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise ConvertError(f"model.bin truncated while reading {what} (wanted {n} bytes, got {len(b)})")
    return b


def read_u(f, fmt: str, what: str):
    return struct.unpack("<" + fmt, read_exact(f, struct.calcsize(fmt), what))


def read_str(f, what: str) -> str:
    (n,) = read_u(f, "H", what)
    raw = read_exact(f, n, what)
    if not raw.endswith(b"\0"):
        raise ConvertError(f"model.bin: string {what} is not NUL-terminated; not a CTranslate2 model?")
    return raw[:-1].decode("utf-8")


def load_ct2(paths) -> dict:
    f = MultiFile(paths)
    try:
        (version,) = read_u(f, "I", "binary version")
        if version != 6:
            raise ConvertError(f"unsupported CTranslate2 binary version {version} (this converter reads version 6)")
        spec = read_str(f, "spec name")
        (revision,) = read_u(f, "I", "spec revision")
        if spec != "WhisperSpec":
            raise ConvertError(f"model spec is {spec!r}, expected 'WhisperSpec'")
        if revision != 3:
            raise ConvertError(f"unsupported WhisperSpec revision {revision} (expected 3)")
        (count,) = read_u(f, "I", "variable count")
        variables = {}
        for _ in range(count):
            name = read_str(f, "variable name")
            (rank,) = read_u(f, "B", f"{name} rank")
            shape = read_u(f, "I" * rank, f"{name} dims") if rank else ()
            (type_id,) = read_u(f, "B", f"{name} dtype")
            (nbytes,) = read_u(f, "I", f"{name} size")
            if type_id not in CT2_DTYPES:
                raise ConvertError(f"{name}: unsupported CTranslate2 dtype id {type_id}")
            dtype, item = CT2_DTYPES[type_id]
            n = 1
            for d in shape:
                n *= d
            if n * item != nbytes:
                raise ConvertError(f"{name}: shape {shape} x {item} bytes != stored size {nbytes}")
            variables[name] = Var(name, tuple(shape), dtype, read_exact(f, nbytes, name))
        (n_alias,) = read_u(f, "I", "alias count")
        for _ in range(n_alias):
            read_str(f, "alias")
            read_str(f, "alias target")
        if f.read(1):
            raise ConvertError("trailing bytes after the model; the file (or the part order) is wrong")
    finally:
        f.close()
    return variables


def load_mel_filters(npz_path: str, n_mels: int):
    key = f"mel_{n_mels}.npy"
    with zipfile.ZipFile(npz_path) as z:
        raw = z.read(key)
    if raw[:6] != b"\x93NUMPY":
        raise ConvertError(f"{npz_path}:{key} is not a .npy array")
    major = raw[6]
    if major == 1:
        (hlen,) = struct.unpack("<H", raw[8:10])
        start = 10
    else:
        (hlen,) = struct.unpack("<I", raw[8:12])
        start = 12
    header = ast.literal_eval(raw[start : start + hlen].decode("latin1"))
    if header["descr"] != "<f4" or header["fortran_order"]:
        raise ConvertError(f"{npz_path}:{key}: expected little-endian float32 C-order, got {header}")
    rows, cols = header["shape"]
    data = raw[start + hlen :]
    if len(data) != rows * cols * 4:
        raise ConvertError(f"{npz_path}:{key}: size mismatch")
    return rows, cols, data


def load_tokens(tiktoken_path: str):
    tokens = []
    with open(tiktoken_path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            tok, rank = line.split()
            if int(rank) != len(tokens):
                raise ConvertError(f"{tiktoken_path}: ranks are not consecutive at {rank!r}")
            tokens.append(base64.b64decode(tok))
    return tokens


def to_f32(v: Var) -> bytes:
    if v.dtype == "float32":
        return v.data
    if v.dtype == "float16":
        n = len(v.data) // 2
        return struct.pack(f"<{n}f", *struct.unpack(f"<{n}e", v.data))
    raise ConvertError(f"{v.name}: cannot convert {v.dtype} to float32")


def to_f16(v: Var, data: bytes | None = None) -> bytes:
    data = v.data if data is None else data
    if v.dtype == "float16":
        return data
    if v.dtype == "float32":
        n = len(data) // 4
        return struct.pack(f"<{n}e", *struct.unpack(f"<{n}f", data))
    raise ConvertError(f"{v.name}: cannot convert {v.dtype} to float16")


def split_rows(v: Var, parts: int):
    """Split a fused [parts*d, ...] tensor along its first axis (row-major => contiguous)."""
    if v.shape[0] % parts:
        raise ConvertError(f"{v.name}: first dim {v.shape[0]} not divisible by {parts}")
    step = len(v.data) // parts
    shape = (v.shape[0] // parts,) + v.shape[1:]
    return [Var(v.name, shape, v.dtype, v.data[i * step : (i + 1) * step]) for i in range(parts)]


def all_zero(v: Var) -> bool:
    # +0.0 and -0.0 both count as zero
    item = 2 if v.dtype == "float16" else 4
    fmt = "e" if item == 2 else "f"
    n = len(v.data) // item
    return all(x == 0.0 for x in struct.unpack(f"<{n}{fmt}", v.data))


def convert(variables: dict):
    """Yield (ggml_name, Var) in whisper's PyTorch state_dict order."""
    used = set()

    def get(name):
        if name not in variables:
            raise ConvertError(f"missing CTranslate2 variable {name!r}")
        used.add(name)
        return variables[name]

    def linear(src, dst, bias=True):
        yield f"{dst}.weight", get(f"{src}/weight")
        if bias:
            yield f"{dst}.bias", get(f"{src}/bias")

    def ln(src, dst):
        yield f"{dst}.weight", get(f"{src}/gamma")
        yield f"{dst}.bias", get(f"{src}/beta")

    def fused(src, dsts):
        w = split_rows(get(f"{src}/weight"), len(dsts))
        b = split_rows(get(f"{src}/bias"), len(dsts))
        for dst, wi, bi in zip(dsts, w, b):
            yield f"{dst}.weight", wi
            if dst.endswith(".key"):
                if not all_zero(bi):
                    raise ConvertError(f"{src}/bias: key bias is not zero; whisper has no key bias")
            else:
                yield f"{dst}.bias", bi

    def n_layers(prefix):
        n = 0
        while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
            n += 1
        return n

    yield "encoder.positional_embedding", get("encoder/position_encodings/encodings")
    yield from linear("encoder/conv1", "encoder.conv1")
    yield from linear("encoder/conv2", "encoder.conv2")
    for i in range(n_layers("encoder")):
        s, d = f"encoder/layer_{i}", f"encoder.blocks.{i}"
        yield from fused(f"{s}/self_attention/linear_0", [f"{d}.attn.query", f"{d}.attn.key", f"{d}.attn.value"])
        yield from linear(f"{s}/self_attention/linear_1", f"{d}.attn.out")
        yield from ln(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        yield from linear(f"{s}/ffn/linear_0", f"{d}.mlp.0")
        yield from linear(f"{s}/ffn/linear_1", f"{d}.mlp.2")
        yield from ln(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
    yield from ln("encoder/layer_norm", "encoder.ln_post")

    yield "decoder.positional_embedding", get("decoder/position_encodings/encodings")
    yield "decoder.token_embedding.weight", get("decoder/embeddings/weight")
    for i in range(n_layers("decoder")):
        s, d = f"decoder/layer_{i}", f"decoder.blocks.{i}"
        yield from fused(f"{s}/self_attention/linear_0", [f"{d}.attn.query", f"{d}.attn.key", f"{d}.attn.value"])
        yield from linear(f"{s}/self_attention/linear_1", f"{d}.attn.out")
        yield from ln(f"{s}/self_attention/layer_norm", f"{d}.attn_ln")
        yield from linear(f"{s}/attention/linear_0", f"{d}.cross_attn.query")
        yield from fused(f"{s}/attention/linear_1", [f"{d}.cross_attn.key", f"{d}.cross_attn.value"])
        yield from linear(f"{s}/attention/linear_2", f"{d}.cross_attn.out")
        yield from ln(f"{s}/attention/layer_norm", f"{d}.cross_attn_ln")
        yield from linear(f"{s}/ffn/linear_0", f"{d}.mlp.0")
        yield from linear(f"{s}/ffn/linear_1", f"{d}.mlp.2")
        yield from ln(f"{s}/ffn/layer_norm", f"{d}.mlp_ln")
    yield from ln("decoder/layer_norm", "decoder.ln")

    # Everything with weights must have been used; scalars and the tied projection are expected leftovers.
    leftovers = [
        n for n, v in variables.items() if n not in used and v.shape and n != "decoder/projection/weight"
    ]
    if leftovers:
        raise ConvertError(f"unmapped CTranslate2 tensors (unknown model variant?): {leftovers[:5]}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="+", help="CTranslate2 model.bin (or its parts, in order)")
    ap.add_argument("--assets", required=True, help="openai-whisper's whisper/assets directory")
    ap.add_argument("-o", "--output", required=True, help="ggml .bin to write")
    args = ap.parse_args(argv)

    try:
        v = load_ct2(args.model)
        n_vocab, n_text_state = v["decoder/embeddings/weight"].shape
        n_audio_ctx, n_audio_state = v["encoder/position_encodings/encodings"].shape
        n_text_ctx = v["decoder/position_encodings/encodings"].shape[0]
        n_mels = v["encoder/conv1/weight"].shape[1]
        if n_audio_ctx != N_AUDIO_CTX:
            raise ConvertError(f"encoder context {n_audio_ctx} != {N_AUDIO_CTX}")
        multilingual = n_vocab >= 51865
        tensors = list(convert(v))
        n_audio_layer = sum(1 for n, _ in tensors if n.startswith("encoder.blocks.") and n.endswith("attn.query.weight"))
        n_text_layer = sum(1 for n, _ in tensors if n.startswith("decoder.blocks.") and n.endswith(".attn.query.weight") and "cross" not in n)
        hparams = [
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            v["encoder/num_heads"].scalar_int(),
            n_audio_layer,
            n_text_ctx,
            n_text_state,
            v["decoder/num_heads"].scalar_int(),
            n_text_layer,
            n_mels,
        ]
        rows, cols, filters = load_mel_filters(os.path.join(args.assets, "mel_filters.npz"), n_mels)
        tokens = load_tokens(os.path.join(args.assets, "multilingual.tiktoken" if multilingual else "gpt2.tiktoken"))

        tmp = args.output + ".tmp"
        with open(tmp, "wb") as out:
            out.write(struct.pack("<i", GGML_MAGIC))
            out.write(struct.pack("<10i", *hparams))
            out.write(struct.pack("<i", 1))  # ftype: f16 weights
            out.write(struct.pack("<ii", rows, cols))
            out.write(filters)
            out.write(struct.pack("<i", len(tokens)))
            for t in tokens:
                out.write(struct.pack("<i", len(t)))
                out.write(t)
            for name, var in tensors:
                shape = var.shape
                if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                    shape = (shape[0], 1)
                f32 = len(shape) < 2 or name in (
                    "encoder.conv1.bias",
                    "encoder.conv2.bias",
                    "encoder.positional_embedding",
                    "decoder.positional_embedding",
                )
                data = to_f32(var) if f32 else to_f16(var)
                nb = name.encode("utf-8")
                out.write(struct.pack("<iii", len(shape), len(nb), 0 if f32 else 1))
                out.write(struct.pack(f"<{len(shape)}i", *reversed(shape)))
                out.write(nb)
                out.write(data)
        os.replace(tmp, args.output)
    except (ConvertError, OSError, KeyError, zipfile.BadZipFile) as e:
        print(f"ct2_to_ggml: error: {e}", file=sys.stderr)
        return 1
    kind = "multilingual" if multilingual else "English-only"
    print(
        f"ct2_to_ggml: wrote {args.output} ({kind}; vocab {n_vocab}, audio {n_audio_state}x{n_audio_layer}, "
        f"text {n_text_state}x{n_text_layer}, {len(tensors)} tensors)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
