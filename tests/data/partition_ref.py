# Independent Python reference of edgefl's iid and shards partitions (xoshiro256**,
# splitmix64 seeding, ef_rng_fork, Lemire bounded draws, Fisher-Yates), written from
# the C sources: it prints the FNV-1a hashes test_known_answers in test_partition.c
# expects. Run: python3 tests/data/partition_ref.py
M = (1 << 64) - 1
def rotl(x, k): return ((x << k) | (x >> (64 - k))) & M
def splitmix(state):
    state[0] = (state[0] + 0x9E3779B97F4A7C15) & M
    z = state[0]
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)
class Rng:
    def __init__(self, seed):
        st = [seed & M]
        self.s = [splitmix(st) for _ in range(4)]
    def fork(self, stream):
        p = self.s
        x = p[0] ^ rotl(p[1], 17) ^ rotl(p[2], 31) ^ rotl(p[3], 47)
        x ^= splitmix([stream & M])
        return Rng(x)
    def u64(self):
        s = self.s
        r = (rotl((s[1] * 5) & M, 7) * 9) & M
        t = (s[1] << 17) & M
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]; s[2] ^= t
        s[3] = rotl(s[3], 45)
        return r
    def below(self, n):
        m = self.u64() * n
        lo = m & M
        if lo < n:
            thresh = ((1 << 64) - n) % n
            while lo < thresh:
                m = self.u64() * n
                lo = m & M
        return m >> 64
    def shuffle(self, a, lo=0, n=None):
        if n is None: n = len(a) - lo
        for i in range(n, 1, -1):
            j = self.below(i)
            a[lo + i - 1], a[lo + j] = a[lo + j], a[lo + i - 1]

def balanced_labels(n, K, seed):
    r = Rng(seed); perm = list(range(n)); r.shuffle(perm)
    l = [0] * n
    for i in range(n): l[perm[i]] = i % K
    return l

def fnv(offsets, indices):
    h = 1469598103934665603
    for v in offsets + indices:
        h ^= v; h = (h * 1099511628211) & M
    return h

def shuffle_slices(base, off, idx):
    s = base.fork(5)
    for c in range(len(off) - 1):
        s.fork(c).shuffle(idx, off[c], off[c + 1] - off[c])

def iid(n, m, seed):
    base = Rng(seed); r = base.fork(1)
    idx = list(range(n)); r.shuffle(idx)
    q, rem = divmod(n, m)
    off = [c * q + min(c, rem) for c in range(m + 1)]
    return off, idx

def shards(labels, K, m, k_per, seed):
    n = len(labels)
    base = Rng(seed)
    srt = sorted(range(n), key=lambda i: (labels[i], i))
    S = m * k_per
    pos = list(range(S)); base.fork(4).shuffle(pos)
    q, rem = divmod(n, S)
    psize = [0] * S
    for t in range(S):
        c, k = divmod(t, k_per)
        psize[pos[t]] = q + (1 if k * m + c < rem else 0)
    pstart = [0]
    for v in psize: pstart.append(pstart[-1] + v)
    off, idx = [], []
    for c in range(m):
        off.append(len(idx))
        for k in range(k_per):
            p = pos[c * k_per + k]
            idx += srt[pstart[p]:pstart[p + 1]]
    off.append(len(idx))
    shuffle_slices(base, off, idx)
    return off, idx

labels = balanced_labels(1000, 10, 1)
print("iid      0x%016x" % fnv(*iid(1000, 30, 2024)))
print("shards:2 0x%016x" % fnv(*shards(labels, 10, 30, 2, 2024)))
