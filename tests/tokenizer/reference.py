#!/usr/bin/python3
"""Reference tokenizers and golden data for tierserve's tokenizer tests.

The Hugging Face `tokenizers` package is not available here, so this script re-implements its
encode/decode pipeline for BPE tokenizer.json files independently, in Python, with the third-party
`regex` module running the pre-tokenizer patterns exactly as written in the files (it supports
\\p{L}, (?i:...) and the (?!\\S) lookahead, as Oniguruma does in tokenizers). SentencePiece
tokenizer.model golden ids come from Debian's python3-sentencepiece.

  reference.py generate OUT_DIR   trains small realistic tokenizers on the licence texts that every
                                  Debian system ships and writes them, in the exact Hugging Face
                                  formats, with golden ids, to OUT_DIR (tests/tokenizer/data)
  reference.py encode DIR TEXT    prints the reference ids of TEXT for DIR/tokenizer.json
                                  (also ChatGLM3's SentencePiece model with appended specials
                                  and GLM-4's tiktoken tokenizer.model, made from the
                                  sentencepiece and llama3 tokenizers it has just written)

Only /usr/bin/python3 with python3-regex and python3-sentencepiece is needed.
"""

import collections
import heapq
import io
import json
import os
import sys
import unicodedata

import regex

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"
                 r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
GPT2_PATTERN = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
SPACE = "\u2581"


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_TO_CHAR = bytes_to_unicode()
CHAR_TO_BYTE = {c: b for b, c in BYTE_TO_CHAR.items()}


def byte_level(text):
    return "".join(BYTE_TO_CHAR[b] for b in text.encode("utf-8"))


# ----------------------------------------------------------------------------------------------
# The Hugging Face pipeline, re-implemented.


class Reference:
    """tokenizers' Tokenizer.encode / decode for a BPE tokenizer.json (single sequence)."""

    def __init__(self, tj):
        self.tj = tj
        model = tj["model"]
        assert model["type"] == "BPE"
        self.vocab = model["vocab"]
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.ranks = {}
        for rank, m in enumerate(model["merges"]):
            a, b = m.split(" ") if isinstance(m, str) else m
            self.ranks[(a, b)] = rank
        self.ignore_merges = model.get("ignore_merges", False)
        self.byte_fallback = model.get("byte_fallback", False)
        self.fuse_unk = model.get("fuse_unk", False)
        self.unk = model.get("unk_token")
        self.added = tj.get("added_tokens", [])
        for a in self.added:
            self.id_to_token[a["id"]] = a["content"]
        self.specials = {a["id"] for a in self.added if a["special"]}
        self.cache = {}

    # -- added tokens (AddedVocabulary::find_matches, leftmost-longest) --
    def split_added(self, text, tokens):
        if not tokens:
            return [(None, text, 0)]
        by_len = sorted(tokens, key=lambda a: -len(a["content"]))
        out, start_offset, pos = [], 0, 0
        while pos < len(text):
            tok = next((a for a in by_len if text.startswith(a["content"], pos)), None)
            if tok is None:
                pos += 1
                continue
            start, stop = pos, pos + len(tok["content"])
            pos = stop
            if start < start_offset:
                continue
            if tok.get("single_word"):
                word = lambda c: regex.match(r"\w", c) is not None
                if (start > 0 and word(text[start - 1])) or (stop < len(text) and word(text[stop])):
                    continue
            if tok.get("lstrip"):
                while start > start_offset and text[start - 1].isspace() and regex.match(
                        r"\s", text[start - 1]):
                    start -= 1
            if tok.get("rstrip"):
                while stop < len(text) and regex.match(r"\s", text[stop]):
                    stop += 1
            if start > start_offset:
                out.append((None, text[start_offset:start], start_offset))
            out.append((tok["id"], text[start:stop], start))
            start_offset = stop
        if start_offset < len(text) or not text:
            out.append((None, text[start_offset:], start_offset))
        return out

    # -- normalizer --
    def normalize(self, text, n=None):
        n = self.tj.get("normalizer") if n is None else n
        if n is None:
            return text
        t = n["type"]
        if t == "Sequence":
            for inner in n["normalizers"]:
                text = self.normalize(text, inner)
            return text
        if t in ("NFC", "NFD", "NFKC", "NFKD"):
            return unicodedata.normalize(t, text)
        if t == "Prepend":
            return n["prepend"] + text if text else text
        if t == "Replace":
            return text.replace(n["pattern"]["String"], n["content"])
        raise ValueError("normalizer " + t)

    # -- pre-tokenizer: list of strings --
    def pre_tokenize(self, pieces, at_start, p=None):
        p = self.tj.get("pre_tokenizer") if p is None else p
        if p is None:
            return pieces
        t = p["type"]
        if t == "Sequence":
            for inner in p["pretokenizers"]:
                pieces = self.pre_tokenize(pieces, at_start, inner)
            return pieces
        if t == "Split":
            assert p["behavior"] == "Isolated" and not p.get("invert")
            pat = regex.compile(p["pattern"]["Regex"])
            return [m.group(0) for s in pieces for m in pat.finditer(s)]
        if t == "ByteLevel":
            out = []
            for s in pieces:
                if p.get("add_prefix_space") and not s.startswith(" "):
                    s = " " + s
                subs = [m.group(0) for m in regex.finditer(GPT2_PATTERN, s)] if p.get(
                    "use_regex", True) else [s]
                out += [byte_level(x) for x in subs if x]
            return out
        if t == "Metaspace":
            rep = p.get("replacement", SPACE)
            out = []
            for i, s in enumerate(pieces):
                s = s.replace(" ", rep)
                scheme = p.get("prepend_scheme", "always")
                if not s.startswith(rep) and (scheme == "always" or
                                              (scheme == "first" and at_start and i == 0)):
                    s = rep + s
                if p.get("split", True):
                    parts, cur = [], ""
                    for ch in s:
                        if ch == rep and cur:
                            parts.append(cur)
                            cur = ""
                        cur += ch
                    parts.append(cur)
                    out += [x for x in parts if x]
                else:
                    out.append(s)
            return out
        raise ValueError("pre_tokenizer " + t)

    # -- BPE model (Word::merge_all: lowest rank first, then leftmost) --
    def bpe(self, word):
        if self.ignore_merges and word in self.vocab:
            return [self.vocab[word]]
        if word in self.cache:
            return self.cache[word]
        syms, unk = [], None
        for ch in word:
            if ch in self.vocab:
                if unk is not None:
                    syms.append(self.id_to_token[unk])
                    unk = None
                syms.append(ch)
                continue
            if self.byte_fallback:
                names = ["<0x%02X>" % b for b in ch.encode("utf-8")]
                if all(n in self.vocab for n in names):
                    syms += names
                    continue
            if self.unk is not None:
                if unk is not None and not self.fuse_unk:
                    syms.append(self.id_to_token[unk])
                unk = self.vocab[self.unk]
        if unk is not None:
            syms.append(self.id_to_token[unk])
        syms = [[s, True] for s in syms]
        heap = [(self.ranks[(syms[i][0], syms[i + 1][0])], i, syms[i][0] + syms[i + 1][0])
                for i in range(len(syms) - 1) if (syms[i][0], syms[i + 1][0]) in self.ranks]
        heapq.heapify(heap)
        nxt = list(range(1, len(syms))) + [-1]
        prv = list(range(-1, len(syms) - 1))
        while heap:
            rank, pos, new = heapq.heappop(heap)
            if not syms[pos][1] or nxt[pos] < 0:
                continue
            right = nxt[pos]
            pair = (syms[pos][0], syms[right][0])
            if pair not in self.ranks or pair[0] + pair[1] != new:
                continue
            syms[pos][0] = new
            syms[right][1] = False
            nxt[pos] = nxt[right]
            if nxt[pos] >= 0:
                prv[nxt[pos]] = pos
            if prv[pos] >= 0:
                pp = (syms[prv[pos]][0], new)
                if pp in self.ranks:
                    heapq.heappush(heap, (self.ranks[pp], prv[pos], pp[0] + pp[1]))
            if nxt[pos] >= 0:
                np_ = (new, syms[nxt[pos]][0])
                if np_ in self.ranks:
                    heapq.heappush(heap, (self.ranks[np_], pos, np_[0] + np_[1]))
        ids = [self.vocab[s] for s, alive in syms if alive]
        if len(word) < 256:
            self.cache[word] = ids
        return ids

    def post_process(self, ids):
        def walk(p):
            if p is None:
                return [], []
            if p["type"] == "Sequence":
                pre, post = [], []
                for inner in p["processors"]:
                    a, b = walk(inner)
                    pre, post = a + pre, post + b
                return pre, post
            if p["type"] == "ByteLevel":
                return [], []
            if p["type"] == "TemplateProcessing":
                pre, post, seen = [], [], False
                for piece in p["single"]:
                    if "Sequence" in piece:
                        seen = True
                        continue
                    ids_ = p["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
                    (post if seen else pre).extend(ids_)
                return pre, post
            raise ValueError("post_processor " + p["type"])

        pre, post = walk(self.tj.get("post_processor"))
        return pre + ids + post

    def encode(self, text, add_special_tokens=True):
        raw = [a for a in self.added if not a.get("normalized")]
        norm_tokens = [dict(a, content=self.normalize(a["content"])) for a in self.added
                       if a.get("normalized")]
        ids = []
        for tid, seg, off in self.split_added(text, raw):
            if tid is not None:
                ids.append(tid)
                continue
            if not seg:
                continue
            for tid2, sub, off2 in self.split_added(self.normalize(seg), norm_tokens):
                if tid2 is not None:
                    ids.append(tid2)
                elif sub:
                    for word in self.pre_tokenize([sub], off == 0 and off2 == 0):
                        ids += self.bpe(word)
        return self.post_process(ids) if add_special_tokens else ids

    def decode(self, ids, skip_special_tokens=False):
        toks = [self.id_to_token[i] for i in ids if i in self.id_to_token and
                not (skip_special_tokens and i in self.specials)]
        return self.decode_chain(toks, self.tj.get("decoder"))

    def decode_chain(self, toks, d):
        if d is None:
            return " ".join(toks)
        out = self.apply_decoder(toks, d)
        return "".join(out)

    def apply_decoder(self, toks, d):
        t = d["type"]
        if t == "Sequence":
            for inner in d["decoders"]:
                toks = self.apply_decoder(toks, inner)
            return toks
        if t == "ByteLevel":
            data = b""
            for tok in toks:
                data += bytes(CHAR_TO_BYTE[c] for c in tok) if all(
                    c in CHAR_TO_BYTE for c in tok) else tok.encode()
            return [data.decode("utf-8", errors="replace")]
        if t == "Replace":
            return [x.replace(d["pattern"]["String"], d["content"]) for x in toks]
        if t == "ByteFallback":
            out, pend = [], b""
            for tok in toks + [None]:
                m = tok is not None and regex.fullmatch(r"<0x([0-9A-Fa-f]{2})>", tok)
                if m:
                    pend += bytes([int(m.group(1), 16)])
                    continue
                if pend:
                    try:
                        out.append(pend.decode("utf-8"))
                    except UnicodeDecodeError:
                        out += ["\ufffd"] * len(pend)
                    pend = b""
                if tok is not None:
                    out.append(tok)
            return out
        if t == "Fuse":
            return ["".join(toks)]
        if t == "Strip":
            out = []
            for tok in toks:
                s = 0
                while s < d["start"] and s < len(tok) and tok[s] == d["content"]:
                    s += 1
                e = len(tok)
                for _ in range(d["stop"]):
                    if e > s and tok[e - 1] == d["content"]:
                        e -= 1
                out.append(tok[s:e])
            return out
        if t == "Metaspace":
            rep = d.get("replacement", SPACE)
            first = d.get("prepend_scheme", "always") != "never"
            return [x.replace(rep, "" if i == 0 and first else " ") for i, x in enumerate(toks)]
        raise ValueError("decoder " + t)


# ----------------------------------------------------------------------------------------------
# Training corpus and tokenizers.

MULTILINGUAL = [
    "Le café est très bon, n'est-ce pas? Élève, garçon, naïve, déjà vu.",
    "Größe, Straße, schön, über, Mädchen, Füße.",
    "日本語のテキストです。東京は大きな都市です。漢字とひらがな。",
    "中文文本测试。我们今天去北京。你好世界！",
    "한국어 텍스트입니다. 안녕하세요 세계.",
    "Привет, мир! Это тест на русском языке.",
    "Emoji: 😀😃 🎉 👍🏽 🚀 — and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 mathematical letters.",
    "Numbers 1234567890 3.14159 2024-06-01 1,000,000 ½ ² ٣٤٥",
]

CASES = [
    "",
    "Hello world",
    "Hello, world! This is a test of the tokenizer.",
    " leading space",
    "  two leading spaces and trailing  ",
    "tabs\tand\tmore\t\ttabs",
    "line one\nline two\n\nline four",
    "\n\n  \n",
    "   \n\n\t  x",
    "trailing newline\n",
    "\r\nwindows\r\nlines\r\n",
    "a  b   c    d",
    "1234567890 12 345 6789 0",
    "3.14159265358979 and 1,000,000.00",
    "DON'T SHOUT, it's fine. We're here, they've gone, I'm ok, you'll see, he'd go.",
    "Don'T mIxEd 'S 'Ll CASES'Re",
    "'s's 'tis",
    "GNU General Public License version 3, or (at your option) any later version.",
    "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND.",
    "日本語のテキストです。",
    "中文文本测试，你好世界！",
    "한국어 텍스트",
    "😀 emoji 🎉🎉 and 👍🏽 skin tone, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 4-byte",
    "cafe\u0301 vs caf\u00e9 (combining acute)",
    "A\u030a ångström n\u0303 ñ e\u0301\u0301",
    "Ελληνικά και Русский текст",
    "mixed123numbers456and789letters",
    "punctuation!!! ??? ... --- ((()))",
    "email@example.com https://www.example.org/path?q=1&r=2#frag",
    "def f(x):\n    return x * 2  # comment\n",
    "{\"json\": [1, 2, 3], \"k\": null}",
    "\u00a0non-breaking\u00a0space and\u3000ideographic space",
    "zero\u200bwidth joiner\u200d and \u2028line sep",
    "ends with spaces   ",
    "x",
    " ",
    "\t",
    "ÿþý¡¢",
]


def corpus_text():
    parts = []
    for name in sorted(os.listdir("/usr/share/common-licenses")):
        path = os.path.join("/usr/share/common-licenses", name)
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                parts.append(f.read())
    parts += MULTILINGUAL * 20
    return "\n".join(parts)


def train_bpe(words, num_merges, min_count=2):
    """Classic BPE training on {word (tuple of symbols): count}; returns the merges in order."""
    words = [(list(w), c) for w, c in words.items()]
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, (w, c) in enumerate(words):
        for a, b in zip(w, w[1:]):
            pairs[(a, b)] += c
            where[(a, b)].add(i)
    merges = []
    for _ in range(num_merges):
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        if best[1] < min_count:
            break
        (a, b) = best[0]
        merges.append((a, b))
        for i in list(where[(a, b)]):
            w, c = words[i]
            for x, y in zip(w, w[1:]):
                pairs[(x, y)] -= c
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
            j, out = 0, []
            while j < len(w):
                if j + 1 < len(w) and w[j] == a and w[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = (out, c)
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += c
                where[(x, y)].add(i)
    return merges


def byte_level_tokenizer(corpus, pattern, num_merges, normalize_nfc):
    text = unicodedata.normalize("NFC", corpus) if normalize_nfc else corpus
    counts = collections.Counter(byte_level(m.group(0)) for m in regex.finditer(pattern, text))
    merges = train_bpe(counts, num_merges)
    vocab = {}
    for b in range(256):
        vocab[BYTE_TO_CHAR[b]] = len(vocab)
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
    return vocab, merges


def added(id_, content, special=True, **flags):
    d = {"id": id_, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": special}
    d.update(flags)
    return d


def tokenizer_json(vocab, merges, added_tokens, normalizer, pre_tokenizer, post_processor,
                   decoder, merges_as_pairs, **model_flags):
    model = {"type": "BPE", "dropout": None, "unk_token": None,
             "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
             "byte_fallback": False, "ignore_merges": False}
    model.update(model_flags)
    model["vocab"] = vocab
    model["merges"] = [list(m) for m in merges] if merges_as_pairs else [
        a + " " + b for a, b in merges]
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added_tokens,
            "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor, "decoder": decoder, "model": model}


def split_step(pattern):
    return {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated",
            "invert": False}


BYTE_LEVEL_PRE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": False}
BYTE_LEVEL_POST = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
                   "use_regex": True}
BYTE_LEVEL_DEC = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                  "use_regex": True}


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)
        f.write("\n")


def make_llama3(corpus, out):
    vocab, merges = byte_level_tokenizer(corpus, LLAMA3_PATTERN, 1500, False)
    n = len(vocab)
    names = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
             "<|eot_id|>", "<|reserved_special_token_0|>"]
    toks = [added(n + i, s) for i, s in enumerate(names)]
    bos = n
    tj = tokenizer_json(
        vocab, merges, toks, None,
        {"type": "Sequence", "pretokenizers": [split_step(LLAMA3_PATTERN), BYTE_LEVEL_PRE]},
        {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False,
             "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                        {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                      {"Sequence": {"id": "A", "type_id": 0}},
                      {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
                      {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [bos],
                                                      "tokens": ["<|begin_of_text|>"]}}}]},
        BYTE_LEVEL_DEC, merges_as_pairs=True, ignore_merges=True)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "tokenizer.json"), tj)
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>",
        "tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": True})
    write_json(os.path.join(out, "generation_config.json"),
               {"bos_token_id": bos, "eos_token_id": [n + 1, n + 4]})
    return tj


def make_qwen2(corpus, out):
    vocab, merges = byte_level_tokenizer(corpus, QWEN2_PATTERN, 1500, True)
    n = len(vocab)
    toks = [added(n, "<|endoftext|>"), added(n + 1, "<|im_start|>"), added(n + 2, "<|im_end|>"),
            added(n + 3, "<tool_call>", special=False),
            added(n + 4, "<|lstrip|>", lstrip=True), added(n + 5, "<|rstrip|>", rstrip=True),
            added(n + 6, "<word>", single_word=True),
            added(n + 7, "Ǹormalized", special=False, normalized=True)]
    tj = tokenizer_json(
        vocab, merges, toks, {"type": "NFC"},
        {"type": "Sequence", "pretokenizers": [split_step(QWEN2_PATTERN), BYTE_LEVEL_PRE]},
        BYTE_LEVEL_POST, BYTE_LEVEL_DEC, merges_as_pairs=False)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "tokenizer.json"), tj)
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "add_bos_token": False, "tokenizer_class": "Qwen2Tokenizer"})
    write_json(os.path.join(out, "config.json"),
               {"architectures": ["Qwen2ForCausalLM"], "eos_token_id": n})
    return tj


def make_gpt2(corpus, out):
    vocab, merges = byte_level_tokenizer(corpus, GPT2_PATTERN, 1000, False)
    n = len(vocab)
    tj = tokenizer_json(
        vocab, merges, [added(n, "<|endoftext|>")], None,
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
         "use_regex": True},
        BYTE_LEVEL_POST, BYTE_LEVEL_DEC, merges_as_pairs=False)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "tokenizer.json"), tj)
    write_json(os.path.join(out, "tokenizer_config.json"), {
        "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "tokenizer_class": "GPT2Tokenizer"})
    return tj


def fnv1a64(ids):
    h = 0xcbf29ce484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little", signed=True):
            h = ((h ^ b) * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return h


def big_text(cases):
    """The 1 MiB input: the non-empty cases joined by newlines, repeated to at least 1 MiB."""
    joined = "\n".join(c for c in cases if c)
    reps = -(-(1 << 20) // len(joined.encode()))
    return joined * reps


def golden(encode, decode, tokens_for_decode, extra_cases=()):
    cases = CASES + list(extra_cases)
    out = {"cases": [], "decode": []}
    for text in cases:
        for add in (True, False):
            out["cases"].append({"text": text, "add_special_tokens": add,
                                 "ids": encode(text, add)})
    for ids in tokens_for_decode(cases):
        for skip in (False, True):
            out["decode"].append({"ids": ids, "skip_special_tokens": skip,
                                  "text": decode(ids, skip)})
    big = encode(big_text(CASES), True)
    out["big"] = {"num_ids": len(big), "fnv1a64": "%016x" % fnv1a64(big)}
    out["num_base_cases"] = len(CASES)
    return out


def decode_inputs(ref, specials):
    def make(cases):
        lists = [ref.encode(c, True) for c in cases[:12]]
        lists.append(ref.encode("日本語 😀", False)[:3])  # cut inside characters
        lists.append(specials + ref.encode(" text after specials", False))
        return lists

    return make


def generate(out_dir):
    corpus = corpus_text()
    special_cases = {
        "llama3": ["<|begin_of_text|>already has bos", "user text <|eot_id|> with a stop",
                   "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
                   "<|reserved_special_token_0|><|begin_of_text|>", "fake <|eot_id| not special"],
        "qwen2": ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n",
                  "a <tool_call> b", "left   <|lstrip|>   right", "left   <|rstrip|>   right",
                  "x<word>y", "x <word> y", "N\u0300ormalized and \u01f8ormalized",
                  "<|endoftext|><|endoftext|>"],
        "gpt2": ["hello<|endoftext|>world", " <|endoftext|> "],
    }
    makers = {"llama3": make_llama3, "qwen2": make_qwen2, "gpt2": make_gpt2}
    for name, make in makers.items():
        d = os.path.join(out_dir, name)
        tj = make(corpus, d)
        ref = Reference(tj)
        specials = [a["id"] for a in tj["added_tokens"][:2]]
        g = golden(ref.encode, ref.decode, decode_inputs(ref, specials), special_cases[name])
        write_json(os.path.join(out_dir, name + "_golden.json"), g)
    make_sentencepiece(corpus, out_dir)
    make_chatglm3(out_dir)
    make_glm4(out_dir)


# ----------------------------------------------------------------------------------------------
# SentencePiece: a tokenizer.model, and its Llama-2-style tokenizer.json conversion.


def added_token_codec(specials, prefix, encode_text, decode_run):
    """encode(text, add_special_tokens) and decode(ids, skip_special_tokens) of a slow tokenizer
    whose `specials` ({text: id}) are split out of the text first (leftmost-longest, as
    transformers splits added tokens) and decoded as their text; the text between goes through
    encode_text, runs of other ids through decode_run; add_special_tokens puts `prefix` first."""
    toks = [{"id": i, "content": c, "special": True} for c, i in specials.items()]
    plain = Reference({"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": []})
    names = {i: c for c, i in specials.items()}

    def encode(text, add):
        ids = list(prefix) if add else []
        for tid, seg, _ in plain.split_added(text, toks):
            if tid is not None:
                ids.append(tid)
            elif seg:
                ids += encode_text(seg)
        return ids

    def decode(ids, skip):
        out, run = "", []
        for i in ids + [None]:
            if i is not None and i not in names:
                run.append(i)
                continue
            if run:
                out += decode_run(run)
                run = []
            if i is not None and not skip:
                out += names[i]
        return out

    return encode, decode


def make_sentencepiece(corpus, out_dir):
    import sentencepiece as spm
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus.splitlines()), model_writer=model, model_type="bpe",
        vocab_size=1200, byte_fallback=True, character_coverage=0.9995,
        split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", unk_id=0, bos_id=1, eos_id=2, minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    d = os.path.join(out_dir, "sentencepiece")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "add_bos_token": True, "add_eos_token": False, "tokenizer_class": "LlamaTokenizer"})

    specials = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())
                if sp.is_control(i) or sp.is_unknown(i)}

    sp_encode, sp_decode = added_token_codec(specials, [sp.bos_id()], sp.encode, sp.decode)

    def sp_decode_inputs(cases):
        return [sp_encode(c, True) for c in cases[:12]] + [[1, 2] + sp.encode("after")]

    extra = ["<s>already bos", "text </s> more", "<unk> literal"]
    write_json(os.path.join(out_dir, "sentencepiece_golden.json"),
               golden(sp_encode, sp_decode, sp_decode_inputs, extra))

    # The conversion transformers' LlamaConverter makes (legacy, Prepend + Replace normalizer).
    vocab = {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}
    scores = {sp.id_to_piece(i): sp.get_score(i) for i in range(sp.get_piece_size())}
    merges = []
    for piece, score in scores.items():
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece))
                 if piece[:k] in vocab and piece[k:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges += local
    merges.sort(key=lambda x: x[2], reverse=True)
    merges = [(a, b) for a, b, _ in merges]
    toks = [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}}
    legacy = tokenizer_json(
        vocab, merges, toks,
        {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": SPACE},
            {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}]},
        None, post,
        {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        merges_as_pairs=False, unk_token="<unk>", fuse_unk=True, byte_fallback=True)
    metaspace = dict(legacy, normalizer=None,
                     pre_tokenizer={"type": "Metaspace", "replacement": SPACE,
                                    "prepend_scheme": "first", "split": False},
                     decoder={"type": "Sequence", "decoders": [
                         {"type": "Metaspace", "replacement": SPACE, "prepend_scheme": "first",
                          "split": False},
                         {"type": "ByteFallback"}, {"type": "Fuse"}]})
    for name, tj in (("sp_legacy", legacy), ("sp_metaspace", metaspace)):
        dd = os.path.join(out_dir, name)
        os.makedirs(dd, exist_ok=True)
        write_json(os.path.join(dd, "tokenizer.json"), tj)
        write_json(os.path.join(dd, "tokenizer_config.json"), {
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
            "tokenizer_class": "LlamaTokenizerFast"})
        ref = Reference(tj)
        agree = sum(ref.encode(c) == sp_encode(c, True) for c in CASES)
        print(f"{name}: HF-pipeline reference agrees with sentencepiece on {agree}/{len(CASES)}",
              file=sys.stderr)
        g = golden(ref.encode, ref.decode, decode_inputs(ref, [1, 2]), extra)
        write_json(os.path.join(out_dir, name + "_golden.json"), g)


# ----------------------------------------------------------------------------------------------
# ChatGLM3 and GLM-4: tokenization_chatglm.py's ChatGLMTokenizer and ChatGLM4Tokenizer.

CHATGLM3_SPECIALS = ["[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>",
                     "<|assistant|>", "<|observation|>"]
GLM4_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>",
                 "<|user|>", "<|assistant|>", "<|observation|>", "<|begin_of_image|>",
                 "<|end_of_image|>", "<|begin_of_video|>", "<|end_of_video|>"]
GLM_CASES = ["[gMASK]sop<|user|>\n hello<|assistant|>", "sophisticated sop eop",
             "[gMASK]<sop><|user|>\nhi<|assistant|>", "<|endoftext|> end", "[MASK][sMASK]x"]


def make_chatglm3(out_dir):
    import sentencepiece as spm
    with open(os.path.join(out_dir, "sentencepiece", "tokenizer.model"), "rb") as f:
        model = f.read()
    sp = spm.SentencePieceProcessor(model_proto=model)
    n = sp.get_piece_size()
    d = os.path.join(out_dir, "chatglm3")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.model"), "wb") as f:
        f.write(model)
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "tokenizer_class": "ChatGLMTokenizer", "eos_token": "</s>", "pad_token": "<unk>",
        "padding_side": "left", "remove_space": False, "do_lower_case": False})
    # Control symbols and <unk> split out as the slow tokenizer does, then the appended specials
    # (ids n, n + 1, ...), which transformers also splits out as added tokens.
    specials = {sp.id_to_piece(i): i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)}
    specials.update({t: n + i for i, t in enumerate(CHATGLM3_SPECIALS)})
    encode, decode = added_token_codec(specials, [specials["[gMASK]"], specials["sop"]],
                                       sp.encode, sp.decode)

    def decode_inputs(cases):
        return [encode(c, True) for c in cases[:12]] + [[n + 6, n + 7] + sp.encode("after")]

    write_json(os.path.join(out_dir, "chatglm3_golden.json"),
               golden(encode, decode, decode_inputs, GLM_CASES))


def make_glm4(out_dir):
    import base64
    with open(os.path.join(out_dir, "llama3", "tokenizer.json"), encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    ranks = {bytes(byte_of[c] for c in token): rank for token, rank in vocab.items()}
    n = len(ranks)
    d = os.path.join(out_dir, "glm4")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokenizer.model"), "w", encoding="ascii") as f:
        for token, rank in sorted(ranks.items(), key=lambda x: x[1]):
            f.write("%s %d\n" % (base64.b64encode(token).decode("ascii"), rank))
    specials = {t: n + i for i, t in enumerate(GLM4_SPECIALS)}
    write_json(os.path.join(d, "tokenizer_config.json"), {
        "tokenizer_class": "ChatGLM4Tokenizer", "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>", "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": False,
                                          "rstrip": False, "single_word": False, "special": True}
                                 for t, i in specials.items()}})
    pattern = regex.compile(LLAMA3_PATTERN)

    def bpe(piece):
        """tiktoken's byte-pair encoding of one pre-token."""
        if piece in ranks:
            return [ranks[piece]]
        parts = [piece[i:i + 1] for i in range(len(piece))]
        while len(parts) > 1:
            best = None
            for i in range(len(parts) - 1):
                r = ranks.get(parts[i] + parts[i + 1])
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        return [ranks[p] for p in parts]

    decoder = {r: t for t, r in ranks.items()}

    def encode_text(text):
        return [i for piece in pattern.findall(text) for i in bpe(piece.encode("utf-8"))]

    def decode_run(run):  # ChatGLM4Tokenizer: bytes joined, then decoded with replacement
        return b"".join(decoder[i] for i in run if i in decoder).decode("utf-8", errors="replace")

    encode, decode = added_token_codec(specials, [specials["[gMASK]"], specials["<sop>"]],
                                       encode_text, decode_run)

    def decode_inputs(cases):
        lists = [encode(c, True) for c in cases[:12]]
        lists.append(encode("日本語 😀", False)[:3])  # cut inside characters
        lists.append([n + 6, n + 7] + encode(" text after specials", False))
        return lists

    write_json(os.path.join(out_dir, "glm4_golden.json"),
               golden(encode, decode, decode_inputs, GLM_CASES))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "generate":
        generate(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "encode":
        with open(os.path.join(sys.argv[2], "tokenizer.json"), encoding="utf-8") as f:
            print(Reference(json.load(f)).encode(sys.argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
