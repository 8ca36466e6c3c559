#!/usr/bin/python3
"""Train tierserve's demo model: a tiny Llama with a byte-level BPE tokenizer, from Debian's licences.

Usage (from the repository root, with Debian's python3-torch and python3-regex):
  /usr/bin/python3 tools/train_demo_model.py [--out models/demo] [--steps 1200] [--batch 16] [--threads 2]
  /usr/bin/python3 tools/train_demo_model.py --encode TEXT [--out models/demo]
  /usr/bin/python3 tools/train_demo_model.py --generate TEXT [--max-tokens 30] [--out models/demo]

The default mode trains the tokenizer and the model and writes a Hugging Face directory:
config.json, generation_config.json, model.safetensors (bf16, tied embeddings),
tokenizer.json and tokenizer_config.json (with a Llama 3 style chat template).
--encode prints the ids the saved tokenizer gives TEXT (BOS added, as HF's encode does).
--generate encodes TEXT and prints the greedy continuation of the saved model, computed with
Hugging Face's bf16 Llama semantics (the ids, then the decoded text).

Corpus: the licence texts in /usr/share/common-licenses (present on every Debian system), each
file once (symlinks such as GPL -> GPL-3 are skipped), plus short synthetic chats whose answers
quote those texts, so the chat template produces licence text ending in <|eot_id|>. The last 5%
of each licence's tokens is held out as the validation set.

Everything is seeded; with the same torch version and thread count the output is bit-identical.
"""

import argparse
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np
import regex
import torch
import torch.nn.functional as F

sys.dont_write_bytecode = True

LICENSE_DIR = "/usr/share/common-licenses"
SEED = 1234
NUM_MERGES = 1787  # 256 bytes + 1787 merges + 5 specials = 2048 ids
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
            "<|eot_id|>"]
PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
           r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")

MODEL = dict(hidden_size=192, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=512, max_position_embeddings=1024, rope_theta=10000.0,
             rms_norm_eps=1e-5)

TITLES = {
    "Apache-2.0": "the Apache License 2.0",
    "Artistic": "the Artistic License",
    "BSD": "the BSD license",
    "CC0-1.0": "CC0 1.0",
    "GFDL-1.2": "the GNU Free Documentation License 1.2",
    "GFDL-1.3": "the GNU Free Documentation License 1.3",
    "GPL-1": "the GNU General Public License version 1",
    "GPL-2": "the GNU General Public License version 2",
    "GPL-3": "the GNU General Public License version 3",
    "LGPL-2": "the GNU Library General Public License version 2",
    "LGPL-2.1": "the GNU Lesser General Public License version 2.1",
    "LGPL-3": "the GNU Lesser General Public License version 3",
    "MPL-1.1": "the Mozilla Public License 1.1",
    "MPL-2.0": "the Mozilla Public License 2.0",
}
QUESTIONS = ["Show me {t}.", "What does {t} say?", "Quote {t}.", "How does {t} begin?",
             "Tell me about {t}."]
GREETING = ("Hello! I am a tiny demo model trained on the licence texts that ship with Debian. "
            "Ask me about the GPL, the Apache License or another free software licence.")


# ----------------------------------------------------------------------------- tokenizer

def bytes_to_unicode():
    """GPT-2's byte -> printable character map (the ByteLevel pre-tokenizer's alphabet)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) +
          list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}
SPLIT_RE = regex.compile(PATTERN)


def pre_tokenize(text):
    """Split(PATTERN, Isolated) then ByteLevel(use_regex=false): byte-level pieces."""
    pieces = []
    pos = 0
    for m in SPLIT_RE.finditer(text):
        if m.start() > pos:  # Isolated keeps unmatched gaps as their own pieces
            pieces.append(text[pos:m.start()])
        pieces.append(m.group())
        pos = m.end()
    if pos < len(text):
        pieces.append(text[pos:])
    return ["".join(BYTE_TO_CHAR[b] for b in p.encode("utf-8")) for p in pieces if p]


def train_bpe(texts, num_merges):
    """Classic BPE over pre-tokenized words; returns merges (pairs of strings) in rank order."""
    counts = {}
    for t in texts:
        for w in pre_tokenize(t):
            counts[w] = counts.get(w, 0) + 1
    words = [list(w) for w in sorted(counts)]
    freqs = [counts[w] for w in sorted(counts)]
    pair_counts = {}
    where = {}
    for i, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_counts[p] = pair_counts.get(p, 0) + freqs[i]
            where.setdefault(p, set()).add(i)
    merges = []
    for _ in range(num_merges):
        if not pair_counts:
            break
        best = max(pair_counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
        if pair_counts[best] < 2:
            break
        merges.append(best)
        merged = best[0] + best[1]
        for i in sorted(where.pop(best, ())):
            w = words[i]
            for p in zip(w, w[1:]):
                pair_counts[p] -= freqs[i]
                if pair_counts[p] == 0:
                    del pair_counts[p]
            out = []
            j = 0
            while j < len(w):
                if j + 1 < len(w) and w[j] == best[0] and w[j + 1] == best[1]:
                    out.append(merged)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_counts[p] = pair_counts.get(p, 0) + freqs[i]
                where.setdefault(p, set()).add(i)
    return merges


class Tokenizer:
    """Encodes exactly as HF tokenizers does for the tokenizer.json this script writes."""

    def __init__(self, tokenizer_json):
        model = tokenizer_json["model"]
        self.vocab = model["vocab"]
        self.ranks = {tuple(m.split(" ")): r for r, m in enumerate(model["merges"])}
        self.specials = {t["content"]: t["id"] for t in tokenizer_json["added_tokens"]}
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.id_to_token.update({i: t for t, i in self.specials.items()})
        alternation = "|".join(regex.escape(s) for s in sorted(self.specials, key=len, reverse=True))
        self.special_re = regex.compile(alternation)
        self.bos_id = self.specials["<|begin_of_text|>"]
        self.cache = {}

    def bpe(self, word):
        if word in self.cache:
            return self.cache[word]
        symbols = list(word)
        while len(symbols) > 1:
            ranked = [(self.ranks.get(p, math.inf), p) for p in zip(symbols, symbols[1:])]
            rank, pair = min(ranked, key=lambda x: x[0])
            if rank == math.inf:
                break
            out = []
            j = 0
            while j < len(symbols):  # leftmost first, non-overlapping: HF's (rank, position) order
                if j + 1 < len(symbols) and (symbols[j], symbols[j + 1]) == pair:
                    out.append(symbols[j] + symbols[j + 1])
                    j += 2
                else:
                    out.append(symbols[j])
                    j += 1
            symbols = out
        ids = [self.vocab[s] for s in symbols]
        self.cache[word] = ids
        return ids

    def encode(self, text, add_special_tokens=True):
        ids = [self.bos_id] if add_special_tokens else []
        pos = 0
        for m in list(self.special_re.finditer(text)) + [None]:
            end = m.start() if m else len(text)
            for piece in pre_tokenize(text[pos:end]):
                ids.extend(self.bpe(piece))
            if m:
                ids.append(self.specials[m.group()])
                pos = m.end()
        return ids

    def decode(self, ids, skip_special_tokens=False):
        out = []
        buf = []
        for i in ids:
            tok = self.id_to_token[i]
            if tok in self.specials:
                out.append(bytes(buf).decode("utf-8", errors="replace"))
                buf = []
                if not skip_special_tokens:
                    out.append(tok)
            else:
                buf.extend(CHAR_TO_BYTE[c] for c in tok)
        out.append(bytes(buf).decode("utf-8", errors="replace"))
        return "".join(out)


def tokenizer_files(merges):
    vocab = {BYTE_TO_CHAR[b]: b for b in range(256)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    added = [{"id": len(vocab) + k, "content": s, "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False, "special": True}
             for k, s in enumerate(SPECIALS)]
    bos = added[0]["id"]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False}]},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                     "tokens": ["<|begin_of_text|>"]}}},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [a + " " + b for a, b in merges]},
    }
    config = {
        "added_tokens_decoder": {str(t["id"]): {k: t[k] for k in (
            "content", "lstrip", "normalized", "rstrip", "single_word", "special")}
            for t in added},
        "bos_token": "<|begin_of_text|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|eot_id|>",
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": MODEL["max_position_embeddings"],
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    return tok, config


def render_chat(messages, add_generation_prompt):
    """CHAT_TEMPLATE rendered by hand (for the synthetic training chats)."""
    out = "<|begin_of_text|>"
    for m in messages:
        out += "<|start_header_id|>" + m["role"] + "<|end_header_id|>\n\n" + m["content"].strip()
        out += "<|eot_id|>"
    if add_generation_prompt:
        out += "<|start_header_id|>assistant<|end_header_id|>\n\n"
    return out


# ----------------------------------------------------------------------------- model

def rms_norm(x, w, eps):
    dtype = x.dtype
    x = x.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return w * x.to(dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def linear(x, w):
    """F.linear; in float32 as a 1x1 convolution, which torch runs through oneDNN (Debian's
    torch does plain matmuls with the reference BLAS, ten times slower)."""
    if x.dtype != torch.float32:
        return F.linear(x, w)
    shape = x.shape
    xi = x.reshape(1, x.numel() // shape[-1], 1, shape[-1]).permute(0, 3, 1, 2)
    y = F.conv2d(xi, w[:, :, None, None])
    return y.permute(0, 2, 3, 1).reshape(*shape[:-1], w.shape[0])


def attend(q, k, v, mask):
    """softmax(q k^T / sqrt(d) + mask) v per head, softmax in float32 (HF eager attention).
    In float32 the two batched products run as grouped 1x1 convolutions (see linear)."""
    dtype = q.dtype
    b, h, t, d = q.shape
    if dtype != torch.float32:
        scores = q @ k.transpose(2, 3) * d ** -0.5
        return F.softmax((scores + mask).float(), dim=-1).to(dtype) @ v
    g = b * h
    x = q.reshape(g, t, d).permute(0, 2, 1).reshape(1, g * d, t, 1)
    scores = F.conv2d(x, k.reshape(g * t, d, 1, 1), groups=g).view(b, h, t, t).transpose(2, 3)
    probs = F.softmax(scores * d ** -0.5 + mask, dim=-1)
    x = probs.reshape(g, t, t).transpose(1, 2).reshape(1, g * t, t, 1)
    out = F.conv2d(x, v.transpose(2, 3).reshape(g * d, t, 1, 1), groups=g)
    return out.view(b, h, d, t).transpose(2, 3)


class Llama(torch.nn.Module):
    """HF LlamaForCausalLM's forward (eager), with HF's parameter names and tied embeddings."""

    def __init__(self, vocab_size, cfg):
        super().__init__()
        self.cfg = cfg
        h, f = cfg["hidden_size"], cfg["intermediate_size"]
        nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
        self.head_dim = h // nh
        self.params = torch.nn.ParameterDict()
        g = torch.Generator().manual_seed(SEED)

        def normal(*shape):
            return torch.nn.Parameter(torch.randn(*shape, generator=g) * 0.02)

        self.names = ["model.embed_tokens.weight"]
        tensors = {"model.embed_tokens.weight": normal(vocab_size, h)}
        for i in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % i
            tensors[p + "input_layernorm.weight"] = torch.nn.Parameter(torch.ones(h))
            tensors[p + "self_attn.q_proj.weight"] = normal(nh * self.head_dim, h)
            tensors[p + "self_attn.k_proj.weight"] = normal(nkv * self.head_dim, h)
            tensors[p + "self_attn.v_proj.weight"] = normal(nkv * self.head_dim, h)
            tensors[p + "self_attn.o_proj.weight"] = normal(h, nh * self.head_dim)
            tensors[p + "post_attention_layernorm.weight"] = torch.nn.Parameter(torch.ones(h))
            tensors[p + "mlp.gate_proj.weight"] = normal(f, h)
            tensors[p + "mlp.up_proj.weight"] = normal(f, h)
            tensors[p + "mlp.down_proj.weight"] = normal(h, f)
        tensors["model.norm.weight"] = torch.nn.Parameter(torch.ones(h))
        self.names = list(tensors)
        for k, v in tensors.items():  # ParameterDict keys may not contain dots
            self.params[k.replace(".", "/")] = v

    def w(self, name):
        return self.params[name.replace(".", "/")]

    def forward(self, ids):
        """ids [B, T] -> logits [B, T, V] in the parameters' dtype."""
        cfg = self.cfg
        b, t = ids.shape
        nh, nkv, d = cfg["num_attention_heads"], cfg["num_key_value_heads"], self.head_dim
        eps = cfg["rms_norm_eps"]
        x = F.embedding(ids, self.w("model.embed_tokens.weight"))
        dtype = x.dtype
        inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
        freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos().to(dtype), emb.sin().to(dtype)
        mask = torch.full((t, t), torch.finfo(dtype).min, dtype=dtype).triu(1)
        for i in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % i
            hs = rms_norm(x, self.w(p + "input_layernorm.weight"), eps)
            q = linear(hs, self.w(p + "self_attn.q_proj.weight")).view(b, t, nh, d).transpose(1, 2)
            k = linear(hs, self.w(p + "self_attn.k_proj.weight")).view(b, t, nkv, d).transpose(1, 2)
            v = linear(hs, self.w(p + "self_attn.v_proj.weight")).view(b, t, nkv, d).transpose(1, 2)
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
            k = k.repeat_interleave(nh // nkv, dim=1)  # repeat_kv
            v = v.repeat_interleave(nh // nkv, dim=1)
            a = attend(q, k, v, mask)
            a = a.transpose(1, 2).reshape(b, t, nh * d)
            x = x + linear(a, self.w(p + "self_attn.o_proj.weight"))
            hs = rms_norm(x, self.w(p + "post_attention_layernorm.weight"), eps)
            gate = F.silu(linear(hs, self.w(p + "mlp.gate_proj.weight")))
            x = x + linear(gate * linear(hs, self.w(p + "mlp.up_proj.weight")),
                             self.w(p + "mlp.down_proj.weight"))
        x = rms_norm(x, self.w("model.norm.weight"), eps)
        return linear(x, self.w("model.embed_tokens.weight"))


def to_bf16_bits(t):
    """float32 tensor -> uint16 numpy bf16 bit patterns, round to nearest even (as torch does)."""
    bits = t.detach().float().contiguous().numpy().view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path, named):
    """named: list of (name, uint16 bf16 array). 8-byte LE header length, space-padded JSON."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, arr in named:
        header[name] = {"dtype": "BF16", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, arr in named:
            f.write(arr.astype("<u2").tobytes())


def read_safetensors_bf16(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        s, t = e["data_offsets"]
        bits = np.frombuffer(data[s:t], dtype="<u2").astype(np.uint32) << 16
        out[name] = torch.from_numpy(bits.view(np.float32).reshape(e["shape"]).copy())
    return out


def load_model(out_dir):
    with open(os.path.join(out_dir, "config.json")) as f:
        cfg = json.load(f)
    model = Llama(cfg["vocab_size"], cfg)
    tensors = read_safetensors_bf16(os.path.join(out_dir, "model.safetensors"))
    with torch.no_grad():
        for name in model.names:
            model.w(name).copy_(tensors[name])
    return model.to(torch.bfloat16).eval()


@torch.no_grad()
def greedy(model, ids, max_tokens, stop_ids=()):
    """HF greedy decoding in the model's dtype, recomputing the full forward each step."""
    ids = list(ids)
    out, margins = [], []
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids]))[0, -1].float()
        top = torch.topk(logits, 2)
        nxt = int(top.indices[0])
        margins.append(float(top.values[0] - top.values[1]))
        out.append(nxt)
        ids.append(nxt)
        if nxt in stop_ids:
            break
    return out, margins


# ----------------------------------------------------------------------------- training

def read_corpus():
    docs = []
    for name in sorted(os.listdir(LICENSE_DIR)):
        path = os.path.join(LICENSE_DIR, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as f:
            docs.append((name, f.read()))
    return docs


def opening(text, limit=700):
    """The first paragraphs of text, up to about limit characters, ending at a paragraph end."""
    paras = [p.strip() for p in regex.split(r"\n\s*\n", text) if p.strip()]
    out = paras[0]
    for p in paras[1:]:
        if len(out) + len(p) > limit:
            break
        out += "\n\n" + p
    return out


def synthetic_chats(docs):
    chats = [[{"role": "user", "content": g}, {"role": "assistant", "content": GREETING}]
             for g in ("Hello", "Hi!", "Who are you?", "What can you do?")]
    for name, text in docs:
        title = TITLES.get(name, name)
        for q in QUESTIONS:
            chats.append([{"role": "user", "content": q.format(t=title)},
                          {"role": "assistant", "content": opening(text)}])
    return [render_chat(c, False) for c in chats]


def train(args):
    torch.manual_seed(SEED)
    rng = random.Random(SEED)
    t0 = time.time()
    docs = read_corpus()
    print("corpus: %d files, %d bytes" % (len(docs), sum(len(t.encode()) for _, t in docs)))
    merges = train_bpe([t for _, t in docs], NUM_MERGES)
    tok_json, tok_config = tokenizer_files(merges)
    tok = Tokenizer(tok_json)
    eos, eot = tok.specials["<|end_of_text|>"], tok.specials["<|eot_id|>"]
    vocab_size = len(tok.vocab) + len(SPECIALS)
    print("tokenizer: %d merges, vocab %d (%.1fs)" % (len(merges), vocab_size, time.time() - t0))

    train_ids, val_ids = [], []
    for _, text in docs:
        ids = tok.encode(text) + [eos]
        cut = int(len(ids) * 0.95)
        train_ids += ids[:cut]
        val_ids += ids[cut:]
    chats = [tok.encode(c, add_special_tokens=False) for c in synthetic_chats(docs)]
    print("tokens: train %d, val %d, chats %d (%.2f bytes/token)" % (
        len(train_ids), len(val_ids), sum(map(len, chats)),
        sum(len(t.encode()) for _, t in docs) / (len(train_ids) + len(val_ids))))
    stream = list(train_ids)
    for _ in range(2):  # the chats twice, shuffled, after the licences
        order = list(range(len(chats)))
        rng.shuffle(order)
        for i in order:
            stream += chats[i]
    data = torch.tensor(stream)
    val = torch.tensor(val_ids)

    model = Llama(vocab_size, MODEL)
    n_params = sum(p.numel() for p in model.parameters())
    print("model: %.2fM parameters" % (n_params / 1e6))
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95))
    seq, batch = args.seq, args.batch
    warmup = max(1, args.steps // 20)

    def val_loss():
        model.eval()
        with torch.no_grad():
            n = (len(val) - 1) // seq * seq
            x = val[:n].view(-1, seq)
            y = val[1:n + 1].view(-1, seq)
            loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item()
        model.train()
        return loss

    t1 = time.time()
    loss_avg = None
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / warmup)
        if step >= warmup:
            frac = (step - warmup) / max(1, args.steps - warmup)
            lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        starts = torch.randint(0, len(data) - seq - 1, (batch,))
        x = torch.stack([data[s:s + seq] for s in starts])
        y = torch.stack([data[s + 1:s + seq + 1] for s in starts])
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 25 == 0 or step == args.steps - 1:
            print("step %5d  lr %.2e  train %.3f  val %.3f  %.0fs" % (
                step, lr, loss_avg, val_loss(), time.time() - t1), flush=True)

    # Final losses of the f32 model over the whole train stream and the validation set.
    model.eval()
    with torch.no_grad():
        n = len(val_ids) // seq * seq  # a sample of the train stream as large as val
        tl = F.cross_entropy(model(torch.tensor(train_ids[:n]).view(-1, seq)).flatten(0, 1),
                             torch.tensor(train_ids[1:n + 1])).item()
    print("final: train loss %.3f, val loss %.3f, training %.0fs, total %.0fs, torch %s" % (
        tl, val_loss(), time.time() - t1, time.time() - t0, torch.__version__))

    os.makedirs(args.out, exist_ok=True)
    cfg = dict(MODEL)
    cfg.update({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                "vocab_size": vocab_size, "head_dim": MODEL["hidden_size"] // MODEL["num_attention_heads"],
                "hidden_act": "silu", "attention_bias": False, "mlp_bias": False,
                "attention_dropout": 0.0, "initializer_range": 0.02, "pretraining_tp": 1,
                "rope_scaling": None, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
                "use_cache": True, "bos_token_id": tok.bos_id, "eos_token_id": [eos, eot]})
    gen = {"bos_token_id": tok.bos_id, "eos_token_id": [eos, eot], "do_sample": True,
           "temperature": 0.7, "top_p": 0.9, "max_length": MODEL["max_position_embeddings"]}
    for fname, obj in (("config.json", cfg), ("generation_config.json", gen),
                       ("tokenizer.json", tok_json), ("tokenizer_config.json", tok_config)):
        with open(os.path.join(args.out, fname), "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
    write_safetensors(os.path.join(args.out, "model.safetensors"),
                      [(n, to_bf16_bits(model.w(n))) for n in sorted(model.names)])
    print("wrote", args.out)
    for prompt in ("This program is free software", "The licenses for most software"):
        sample(args.out, prompt, 40)
    sample(args.out, render_chat([{"role": "user", "content": "Show me the BSD license."}], True),
           80, add_special_tokens=False)


def load_tokenizer(out_dir):
    with open(os.path.join(out_dir, "tokenizer.json"), encoding="utf-8") as f:
        return Tokenizer(json.load(f))


def sample(out_dir, text, max_tokens, add_special_tokens=True):
    tok = load_tokenizer(out_dir)
    model = load_model(out_dir)
    ids = tok.encode(text, add_special_tokens)
    out, margins = greedy(model, ids, max_tokens,
                          (tok.specials["<|end_of_text|>"], tok.specials["<|eot_id|>"]))
    print("prompt ids:", ",".join(map(str, ids)))
    print("greedy ids:", ",".join(map(str, out)))
    print("min top-1 margin: %.3f" % min(margins))
    print("text: %r" % (text + tok.decode(out)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/demo")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--encode", metavar="TEXT")
    ap.add_argument("--generate", metavar="TEXT")
    ap.add_argument("--no-special-tokens", action="store_true")
    ap.add_argument("--max-tokens", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.encode is not None:
        print(",".join(map(str, load_tokenizer(args.out).encode(
            args.encode, not args.no_special_tokens))))
    elif args.generate is not None:
        sample(args.out, args.generate, args.max_tokens, not args.no_special_tokens)
    else:
        train(args)


if __name__ == "__main__":
    main()
