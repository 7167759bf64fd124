#!/usr/bin/python3
r"""Reference for tests/data/test_bpe.c, written independently of the C code.

  bpe_ref.py pretok < lines       each input line is hex of a UTF-8 string; prints
                                  the pre-tokens of GPT-2's regex as hex, space-separated
  bpe_ref.py pretok-unicode < lines
                                  the same with the `regex` module (GPT-2's own engine,
                                  full Unicode \p{L} and \p{N}); exits 3 without it
  bpe_ref.py train FILE VOCAB MINFREQ
                                  trains byte-level BPE naively (every pair recounted
                                  at every step) and prints one merge "LEFT RIGHT" (ids)
                                  per line

In `pretok` the regex is GPT-2's with Python's `re` classes standing in for
\p{L} and \p{N} ([^\W\d_] and \d); the C test only feeds it characters
where the two agree (ASCII and Latin-1 letters, ASCII digits, space, tab, CR,
LF). `pretok-unicode` uses GPT-2's exact pattern with the `regex` module.
Training follows docs/slm.md: the text is cut at "<|endoftext|>", words are
counted, and the most frequent pair wins, ties to the smaller left id, then
the smaller right id; a pair whose bytes are already a token is never merged.
"""
import re
import sys

GPT2 = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PAT = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+""")
EOT = "<|endoftext|>"


def pretok(text):
    return PAT.findall(text)


def train(data, vocab, min_freq):
    text = data.decode("latin-1")  # only ASCII corpora are passed: bytes == chars
    words = {}
    for seg in text.split(EOT):
        for w in pretok(seg):
            b = w.encode("latin-1")
            words[b] = words.get(b, 0) + 1
    seqs = [[list(w), c] for w, c in words.items()]
    tokens = [bytes([i]) for i in range(256)]
    known = set(tokens) | {EOT.encode()}
    banned = set()
    merges = []
    target = vocab - 256 - 1
    while len(merges) < target:
        counts = {}
        for s, c in seqs:
            for i in range(len(s) - 1):
                p = (s[i], s[i + 1])
                counts[p] = counts.get(p, 0) + c
        best = None
        for p, c in counts.items():
            if p in banned:
                continue
            if best is None or c > best[0] or (c == best[0] and p < best[1]):
                best = (c, p)
        if best is None or best[0] < min_freq:
            break
        a, b = best[1]
        joined = tokens[a] + tokens[b]
        if joined in known:
            banned.add((a, b))
            continue
        x = len(tokens)
        tokens.append(joined)
        known.add(joined)
        merges.append((a, b))
        for item in seqs:
            s = item[0]
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(x)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            item[0] = out
    return merges


def main():
    if sys.argv[1] in ("pretok", "pretok-unicode"):
        split = pretok
        if sys.argv[1] == "pretok-unicode":
            try:
                import regex
            except ImportError:
                sys.exit(3)
            split = regex.compile(GPT2).findall
        for line in sys.stdin:
            s = bytes.fromhex(line.strip()).decode("utf-8")
            print(" ".join(p.encode("utf-8").hex() for p in split(s)))
    elif sys.argv[1] == "train":
        with open(sys.argv[2], "rb") as f:
            data = f.read()
        for a, b in train(data, int(sys.argv[3]), int(sys.argv[4])):
            print(a, b)
    else:
        sys.exit("usage: bpe_ref.py pretok|train ...")


if __name__ == "__main__":
    main()
