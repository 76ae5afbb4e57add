#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/): small valid inputs of each
format plus the malformed cases of issue 16. Standard library only (no torch): the pickles are
assembled from opcodes. fuzz/corpus/engine_file/*.bert came from bert::WriteSynthetic on tiny
configs (see docs/HARDENING.md). Run from the repository root: python3 fuzz/make_corpus.py"""
import io, json, os, struct, zipfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def put(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def safetensors(header, data=b""):
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


# ---- safetensors ---------------------------------------------------------------------------------
put("safetensors", "valid", safetensors({"__metadata__": {"format": "pt"},
                                         "w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                                         "b": {"dtype": "I64", "shape": [1], "data_offsets": [16, 24]}}, bytes(24)))
put("safetensors", "duplicate_key", safetensors(
    b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
    bytes(8)))
put("safetensors", "escape_name", safetensors(b'{"\\u001b[2J":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}', b"\0"))
put("safetensors", "overlap", safetensors({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                           "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
put("safetensors", "huge_shape", safetensors({"a": {"dtype": "F32", "shape": [4611686018427387904, 4],
                                                    "data_offsets": [0, 0]}}))
put("safetensors", "truncated", struct.pack("<Q", 1 << 40) + b"{}")

# ---- sharded indexes (first byte: 1 safetensors index, 0 torch index) ----------------------------
put("sharded_index", "st_valid", b"\x01" + json.dumps({"weight_map": {"a": "shard.safetensors",
                                                                        "b": "shard.safetensors"}}).encode())
put("sharded_index", "st_dotdot", b"\x01" + json.dumps({"weight_map": {"a": "../x.safetensors"}}).encode())
put("sharded_index", "st_dup", b'\x01{"weight_map": {"a": "shard.safetensors", "a": "shard.safetensors"}}')
put("sharded_index", "pt_dotdot", b"\x00" + json.dumps({"weight_map": {"a": "../outside.bin"}}).encode())
put("sharded_index", "pt_absolute", b"\x00" + json.dumps({"weight_map": {"a": "/etc/passwd"}}).encode())
put("sharded_index", "pt_missing", b"\x00" + json.dumps({"weight_map": {"a": "pytorch_model-1.bin"}}).encode())


# ---- pickles -------------------------------------------------------------------------------------
class P:
    def __init__(self):
        self.b = bytearray(b"\x80\x02")

    def op(self, c):
        self.b += c
        return self

    def str(self, s):
        s = s.encode() if isinstance(s, str) else s
        self.b += b"X" + struct.pack("<I", len(s)) + s
        return self

    def int(self, v):
        self.b += b"K" + bytes([v]) if 0 <= v < 256 else b"J" + struct.pack("<i", v)
        return self

    def glob(self, module, name):
        self.b += b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return self

    def tup(self, vals):
        self.op(b"(")
        for v in vals:
            self.int(v)
        return self.op(b"t")

    def tensor(self, storage="FloatStorage", key="0", numel=4, offset=0, size=(2, 2), stride=(2, 1)):
        self.glob("torch._utils", "_rebuild_tensor_v2").op(b"(")
        self.op(b"(").str("storage").glob("torch", storage).str(key).str("cpu").int(numel).op(b"t").op(b"Q")
        self.int(offset).tup(size).tup(stride).op(b"\x89")
        return self.glob("collections", "OrderedDict").op(b")").op(b"R").op(b"t").op(b"R")

    def state_dict(self, entries):
        self.glob("collections", "OrderedDict").op(b")").op(b"R").op(b"(")
        for name, kw in entries:
            self.str(name).tensor(**kw)
        return self.op(b"u").op(b".")


valid_pkl = bytes(P().state_dict([("w", {}), ("b", {"offset": 1, "size": (3,), "stride": (1,)})]).b)
put("pickle", "valid", valid_pkl)
put("pickle", "duplicate_name", bytes(P().state_dict([("w", {}), ("w", {})]).b))
put("pickle", "os_system", bytes(P().glob("os", "system").str("echo hi").op(b"\x85").op(b"R").op(b".").b))
put("pickle", "escape_global", bytes(P().glob("os\x1b]0;x\x07", "system").op(b".").b))
put("pickle", "memo", b"\x80\x02]q\x00(h\x00e.")


# ---- zip and torch checkpoints -------------------------------------------------------------------
def torch_zip(pkl, storages, zip64=False, prefix="archive/"):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        def add(name, data):
            with z.open(zipfile.ZipInfo(name), "w", force_zip64=zip64) as f:
                f.write(data)
        add(prefix + "data.pkl", pkl)
        add(prefix + "byteorder", b"little")
        for key, data in storages.items():
            add(prefix + "data/" + key, data)
        add(prefix + "version", b"3\n")
    return buf.getvalue()


ckpt = torch_zip(valid_pkl, {"0": struct.pack("<4f", 1, 2, 3, 4)})
put("torch_checkpoint", "valid", ckpt)
put("torch_checkpoint", "valid_zip64", torch_zip(valid_pkl, {"0": struct.pack("<4f", 1, 2, 3, 4)}, zip64=True))
put("torch_checkpoint", "missing_storage", torch_zip(valid_pkl, {}))
put("torch_checkpoint", "short_storage", torch_zip(valid_pkl, {"0": b"\0" * 6}))
put("torch_checkpoint", "duplicate_name", torch_zip(bytes(P().state_dict([("w", {}), ("w", {})]).b),
                                                    {"0": bytes(16)}))
put("zip", "valid", ckpt)
put("zip", "empty", b"PK\x05\x06" + bytes(18))
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("a.txt", "hello hello hello")
put("zip", "deflated", buf.getvalue())

# ---- config.json ---------------------------------------------------------------------------------
base = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 97,
        "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 48,
        "max_position_embeddings": 40, "type_vocab_size": 2, "hidden_act": "gelu", "pad_token_id": 0,
        "id2label": {"0": "NEG", "1": "POS"}}
put("config", "bert", json.dumps(base))
put("config", "roberta", json.dumps(dict(base, model_type="roberta", architectures=["RobertaForMaskedLM"],
                                         pad_token_id=1, type_vocab_size=1)))
put("config", "distilbert", json.dumps({"model_type": "distilbert", "vocab_size": 97, "dim": 32, "n_layers": 3,
                                        "n_heads": 4, "hidden_dim": 48, "max_position_embeddings": 40}))
put("config", "electra", json.dumps(dict(base, model_type="electra", architectures=["ElectraForPreTraining"],
                                         embedding_size=16)))
put("config", "albert", json.dumps(dict(base, model_type="albert", architectures=["AlbertForMaskedLM"],
                                        embedding_size=16, num_hidden_groups=1)))
put("config", "squeezebert", json.dumps(dict(base, model_type="squeezebert", architectures=["SqueezeBertModel"],
                                             embedding_size=32, q_groups=4, k_groups=4, v_groups=2,
                                             post_attention_groups=1, intermediate_groups=4, output_groups=8)))
for key, value in [("hidden_size", 1 << 62), ("num_labels", 2000000000), ("num_hidden_layers", 1000000000),
                   ("vocab_size", 1 << 40), ("vocab_size", 1 << 63), ("max_position_embeddings", 1 << 62)]:
    c = dict(base)
    c.pop("id2label")
    c[key] = value
    put("config", "absurd_%s_%d" % (key, value.bit_length()), json.dumps(c))

# ---- vocab.txt -----------------------------------------------------------------------------------
put("vocab", "valid", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\n##s\ncafé\n中\n")
put("vocab", "crlf", "[PAD]\r\n[UNK]\r\nthe\r\n")
put("vocab", "duplicate", "a\nb\na\n")
put("vocab", "bad_utf8", b"a\n\xff\xfe\n")
put("vocab", "empty", "")

# ---- tokenizer (first byte: options) -------------------------------------------------------------
put("tokenizer", "plain", b"\x01Hello, world! unable playing")
put("tokenizer", "pair", b"\x03the caf\xc3\xa9\x00\xe4\xb8\xad\xe6\x96\x87 text")
put("tokenizer", "truncate", b"\x2d" + b"a b c d e f g h i j k l m n o p " * 4)
put("tokenizer", "controls", b"\x00\x1b[31m\xc2\x9b\xe2\x80\x8b\xef\xbb\xbf x\ty\r\n")
put("tokenizer", "invalid_utf8", b"\x01\xff\xfe\xc3\x28 \xed\xa0\x80")

# ---- TSV (first byte: options) -------------------------------------------------------------------
put("tsv", "classify", b"\x0a" + b"sentence\tlabel\ngood movie\t1\nbad movies\t0\n")
put("tsv", "pairs", b"\x06" + b"good\tmovie\t1\nbad\tmovie\t0\n")
put("tsv", "regression", b"\x03" + b"s\tlabel\ngood\t0.5\nbad\tnan\n")
put("tsv", "escape_label", b"\x0a" + b"s\tlabel\ngood\t\x1b]0;x\x07\n")
put("tsv", "text_lines", b"\x00" + b"one sentence.\n\nanother doc.\r\n")

# ---- JSONL lines ---------------------------------------------------------------------------------
put("jsonl", "text", '{"text": "hello world"}')
put("jsonl", "pair_id", '{"text": "q?", "text_pair": "context", "id": 7}')
put("jsonl", "bad_type", '{"text": 5, "id": [1]}')
put("jsonl", "plain_pair", "question\tcontext\r")
put("jsonl", "deep", "[" * 200 + "]" * 200)

# ---- training state (4 bytes of run shape, then JSON) --------------------------------------------
put("training_state", "valid", b"\x02\x03\x01\x02" + b'{"epoch": 0, "next_batch": 2, "total_steps": 6}')
put("training_state", "strings", b"\x02\x03\x01\x02" + b'{"epoch": "0", "next_batch": 2, "total_steps": 6}')
put("training_state", "negative", b"\x02\x03\x01\x02" + b'{"epoch": -1000000000, "next_batch": -1, "total_steps": 6}')
put("training_state", "huge", b"\x02\x03\x01\x02" + b'{"epoch": 0, "next_batch": 18446744073709551615, "total_steps": 6}')
