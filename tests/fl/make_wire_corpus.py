#!/usr/bin/python3
"""Writes the wire-format regression corpus, tests/fl/wire_corpus/.

An encoder independent of the C one (struct + zlib.crc32, following the
layout in include/edgefl/wire.h) writes small binary messages:

  valid-<type>[-<variant>].bin   must decode: envelope and typed payload
  bad-env-<what>.bin             must be refused by ef_wire_decode
  bad-payload-<type>-<what>.bin  pass the envelope, refused by the payload
                                 decoder of their type

tests/fl/test_wire_corpus.c checks every file (with max_payload = MAX_PAYLOAD
below); fuzz/run.sh uses the folder as the seed corpus of fuzz/fuzz_wire.c.
Output is deterministic: rerun after changing the format and commit the
result. Debian /usr/bin/python3, standard library only.

usage: tests/fl/make_wire_corpus.py [OUT_DIR]
"""
import math
import os
import random
import struct
import sys
import zlib

MAX_PAYLOAD = 4096  # the limit test_wire_corpus.c decodes with
JOB = 0x0123456789ABCDEF  # every valid file carries this job id
VERSION = 2
SERVER = 0xFFFFFFFF

CHECKIN, MODEL, TASK, UPDATE, EVAL, EVAL_RESULT, LEAVE = range(1, 8)
SA_SETUP, SA_MASKED, PARTIAL = 8, 13, 16


def seal(mtype, payload, job=JOB, rnd=3, sender=SERVER, seq=1, version=VERSION, flags=0,
         magic=b"EFL1", length=None, crc_xor=0, task=0):
    """Header + payload; the overrides make malformed envelopes whose CRC is
    still right (unless crc_xor), so only the intended check can refuse them."""
    if length is None:
        length = len(payload)
    head = magic + struct.pack("<BBHQIIQQI", version, mtype, flags, job, rnd, sender, seq, task,
                               length)
    crc = zlib.crc32(payload, zlib.crc32(head)) ^ crc_xor
    return head + struct.pack("<I", crc) + payload


def checkin(n_train=60000, n_eval=10000):
    return struct.pack("<II", n_train, n_eval)


def floats(n, scale=0.01):
    return struct.pack("<%df" % n, *[(i - n / 2) * scale for i in range(n)])


def model(n=8, version=5, codec=0, count=None, tail=b""):
    return struct.pack("<IIQ", version, codec, n if count is None else count) + floats(n) + tail


HASH = bytes((i * 37 + 11) & 0xFF for i in range(32))


def task(version=5, deadline=30.0, epochs=2, batch=32, lr=0.05, momentum=0.9, prox_mu=0.0,
         seed=0x1122334455667788):
    # 64 bytes: no pad word before the seed (it is 8-aligned at offset 56)
    return struct.pack("<I32sfHHfffQ", version, HASH, deadline, epochs, batch, lr, momentum,
                       prox_mu, seed)


def update(n=8, version=5, n_examples=600, loss=0.75, steps=38, codec=0, count=None, tail=b""):
    head = struct.pack("<IIfIIIQ", version, n_examples, loss, steps, codec, 0,
                       n if count is None else count)
    return head + floats(n, -0.001) + tail


def sa_setup(index=3, n=10, k=4, t=3, bits=32, levels=1000, dp_kind=0, flags=0, clip=1.0,
             weight_cap=1000.0, dp_clip=0.0, dp_noise=0.0, **task_args):
    return task(**task_args) + struct.pack("<8I4d", index, n, k, t, bits, levels, dp_kind, flags,
                                           clip, weight_cap, dp_clip, dp_noise)


def sa_masked(n=8, version=5, n_examples=600, loss=0.75, steps=38, flags=0, pad=0, count=None,
              tail=b""):
    words = struct.pack(f"<{n}I", *[(i * 2654435761) & 0xFFFFFFFF for i in range(n)])
    return struct.pack("<IIfIIIQ", version, n_examples, loss, steps, flags, pad,
                       n if count is None else count) + words + tail


def partial(ids=(3, 8, 21), version=5, count=None, n=4, loss_sum=7.5, n_ex=None, tail=b""):
    n_ex = n_ex or [10 * (k + 1) for k in range(len(ids))]
    head = struct.pack("<IIQd", version, len(ids) if count is None else count, n, loss_sum)
    ents = b"".join(struct.pack("<IIQQ", c, e, 1000 + c, 50 + c) for c, e in zip(ids, n_ex))
    return head + ents + floats(n, 0.002) + tail


def evaltask(version=5):
    return struct.pack("<II32s", version, 0, HASH)


def eval_result(version=5, n=10000, loss_sum=2345.5, correct=8123):
    return struct.pack("<IIdII", version, n, loss_sum, correct, 0)


def leave(reason=1):
    return struct.pack("<I", reason)


def corpus():
    files = {}

    # ---- valid messages, every type
    files["valid-checkin"] = seal(CHECKIN, checkin(), sender=17, rnd=0, seq=1)
    files["valid-checkin-zero"] = seal(CHECKIN, checkin(0, 0), sender=0, rnd=0, seq=0)
    files["valid-model"] = seal(MODEL, model())
    files["valid-model-empty"] = seal(MODEL, model(0))
    # payload exactly MAX_PAYLOAD bytes: the limit is inclusive
    files["valid-model-at-limit"] = seal(MODEL, model((MAX_PAYLOAD - 16) // 4))
    files["valid-task"] = seal(TASK, task())
    files["valid-task-edges"] = seal(TASK, task(deadline=0.0, epochs=65535, batch=1, lr=1e-30,
                                                momentum=0.0, prox_mu=0.5, seed=2**64 - 1))
    files["valid-update"] = seal(UPDATE, update(), sender=17, seq=9, task=0x0102030405060708)
    files["valid-update-neg-loss"] = seal(UPDATE, update(n=1, loss=-1.5), sender=2, seq=2)
    files["valid-eval"] = seal(EVAL, evaltask())
    files["valid-eval_result"] = seal(EVAL_RESULT, eval_result(), sender=17, seq=10)
    files["valid-eval_result-perfect"] = seal(EVAL_RESULT,
                                              eval_result(n=5, correct=5, loss_sum=0.0), sender=4)
    files["valid-leave"] = seal(LEAVE, leave(), sender=17, rnd=0, seq=11)
    files["valid-sa_setup"] = seal(SA_SETUP, sa_setup())
    files["valid-sa_setup-dp"] = seal(SA_SETUP, sa_setup(index=9, bits=1, levels=1, dp_kind=1,
                                                         dp_clip=0.5, dp_noise=123.5))
    files["valid-sa_setup-nomask"] = seal(SA_SETUP, sa_setup(k=0, flags=1))
    files["valid-sa_masked"] = seal(SA_MASKED, sa_masked(), sender=17, seq=12)
    files["valid-partial"] = seal(PARTIAL, partial(), sender=900, seq=4)
    files["valid-partial-one"] = seal(PARTIAL, partial(ids=(0,), n=1), sender=900, seq=5)
    files["valid-sa_masked-clipbit"] = seal(SA_MASKED, sa_masked(n=1, flags=1), sender=2)

    # ---- envelopes refused by ef_wire_decode
    good = files["valid-checkin"]
    files["bad-env-empty"] = b""
    files["bad-env-one-byte"] = b"E"
    files["bad-env-header-47"] = good[:47]
    files["bad-env-magic"] = seal(CHECKIN, checkin(), magic=b"EFL2")
    files["bad-env-magic-lower"] = seal(CHECKIN, checkin(), magic=b"efl1")
    files["bad-env-version-0"] = seal(CHECKIN, checkin(), version=0)
    files["bad-env-version-1"] = seal(CHECKIN, checkin(), version=1)
    files["bad-env-version-255"] = seal(CHECKIN, checkin(), version=255)
    files["bad-env-type-0"] = seal(0, checkin())
    files["bad-env-type-17"] = seal(17, checkin())
    files["bad-env-type-255"] = seal(255, checkin())
    # flag 1 (signed) without the 64 signature bytes
    files["bad-env-flags-1"] = seal(CHECKIN, checkin(), flags=1)
    files["bad-env-flags-2"] = seal(CHECKIN, checkin(), flags=2)
    files["bad-env-flags-8000"] = seal(CHECKIN, checkin(), flags=0x8000)
    files["bad-env-length-larger"] = seal(CHECKIN, checkin(), length=9)
    files["bad-env-length-smaller"] = seal(CHECKIN, checkin(), length=7)
    files["bad-env-length-zero"] = seal(CHECKIN, checkin(), length=0)
    files["bad-env-length-huge"] = seal(CHECKIN, checkin(), length=0xFFFFFFFF)
    files["bad-env-truncated"] = files["valid-model"][:-5]
    files["bad-env-trailing-byte"] = files["valid-model"] + b"\x00"
    files["bad-env-header-only"] = files["valid-task"][:48]
    files["bad-env-oversized"] = seal(MODEL, model((MAX_PAYLOAD - 16) // 4 + 1))
    files["bad-env-crc"] = seal(CHECKIN, checkin(), crc_xor=1)
    files["bad-env-crc-zero"] = good[:44] + b"\0\0\0\0" + good[48:]
    flipped = bytearray(files["valid-update"])
    flipped[60] ^= 0x10  # one bit of the payload
    files["bad-env-crc-payload-bit"] = bytes(flipped)
    flipped = bytearray(files["valid-task"])
    flipped[9] ^= 0x01  # one bit of the job id
    files["bad-env-crc-header-bit"] = bytes(flipped)
    rng = random.Random(20240601)
    files["bad-env-garbage"] = bytes(rng.randrange(256) for _ in range(64))
    files["bad-env-garbage-magic"] = b"EFL1\x02\x04" + bytes(rng.randrange(256) for _ in range(70))
    files["bad-env-zeros"] = bytes(48)
    files["bad-env-text"] = b'{"type":"update","round":3,"values":[0.1,0.2,0.3]}\n'

    # ---- well-formed envelopes around payloads refused by their decoder
    bp = {}
    bp["checkin-short"] = (CHECKIN, checkin()[:7])
    bp["checkin-long"] = (CHECKIN, checkin() + b"\0")
    bp["checkin-empty"] = (CHECKIN, b"")
    bp["model-empty"] = (MODEL, b"")
    bp["model-short-fixed"] = (MODEL, model()[:15])
    bp["model-codec-1"] = (MODEL, model(codec=1))
    bp["model-codec-max"] = (MODEL, model(codec=0xFFFFFFFF))
    bp["model-count-more"] = (MODEL, model(count=9))
    bp["model-count-less"] = (MODEL, model(count=7))
    bp["model-count-zero"] = (MODEL, model(count=0))
    bp["model-count-overflow"] = (MODEL, model(count=2**62 + 8))  # * 4 wraps to 32
    bp["model-count-overflow-63"] = (MODEL, model(count=2**63 + 8))
    bp["model-count-max"] = (MODEL, model(count=2**64 - 1))
    bp["model-ragged-tail"] = (MODEL, model(tail=b"\1\2"))
    bp["task-short"] = (TASK, task()[:63])
    bp["task-long"] = (TASK, task() + b"\0\0\0\0")  # the 68-byte layout with a pad word
    bp["task-epochs-0"] = (TASK, task(epochs=0))
    bp["task-batch-0"] = (TASK, task(batch=0))
    bp["task-lr-0"] = (TASK, task(lr=0.0))
    bp["task-lr-neg"] = (TASK, task(lr=-0.1))
    bp["task-lr-nan"] = (TASK, task(lr=math.nan))
    bp["task-lr-inf"] = (TASK, task(lr=math.inf))
    bp["task-momentum-1"] = (TASK, task(momentum=1.0))
    bp["task-momentum-neg"] = (TASK, task(momentum=-0.5))
    bp["task-momentum-nan"] = (TASK, task(momentum=math.nan))
    bp["task-deadline-neg"] = (TASK, task(deadline=-1.0))
    bp["task-deadline-nan"] = (TASK, task(deadline=math.nan))
    bp["task-deadline-inf"] = (TASK, task(deadline=math.inf))
    bp["task-prox-neg"] = (TASK, task(prox_mu=-0.01))
    bp["task-prox-nan"] = (TASK, task(prox_mu=math.nan))
    bp["task-prox-inf"] = (TASK, task(prox_mu=math.inf))
    bp["update-short-fixed"] = (UPDATE, update()[:31])
    bp["update-codec-1"] = (UPDATE, update(codec=1))
    bp["update-count-more"] = (UPDATE, update(count=9))
    bp["update-count-less"] = (UPDATE, update(count=7))
    bp["update-count-overflow"] = (UPDATE, update(count=2**62 + 8))
    bp["update-count-max"] = (UPDATE, update(count=2**64 - 1))
    bp["update-ragged-tail"] = (UPDATE, update(tail=b"\1"))
    bp["update-zero-examples"] = (UPDATE, update(n_examples=0))
    bp["update-loss-nan"] = (UPDATE, update(loss=math.nan))
    bp["update-loss-inf"] = (UPDATE, update(loss=-math.inf))
    bp["eval-short"] = (EVAL, evaltask()[:39])
    bp["eval-long"] = (EVAL, evaltask() + b"\0")
    bp["eval-hash-only"] = (EVAL, HASH)
    bp["eval_result-short"] = (EVAL_RESULT, eval_result()[:20])
    bp["eval_result-long"] = (EVAL_RESULT, eval_result() + b"\0")
    bp["eval_result-correct-gt-n"] = (EVAL_RESULT, eval_result(n=10, correct=11))
    bp["eval_result-loss-nan"] = (EVAL_RESULT, eval_result(loss_sum=math.nan))
    bp["eval_result-loss-neg"] = (EVAL_RESULT, eval_result(loss_sum=-0.5))
    bp["eval_result-loss-inf"] = (EVAL_RESULT, eval_result(loss_sum=math.inf))
    bp["leave-empty"] = (LEAVE, b"")
    bp["leave-long"] = (LEAVE, leave() + b"\0\0\0\0")
    bp["sa_setup-short"] = (SA_SETUP, sa_setup()[:127])
    bp["sa_setup-long"] = (SA_SETUP, sa_setup() + b"\0")
    bp["sa_setup-task-only"] = (SA_SETUP, task())
    bp["sa_setup-bad-task"] = (SA_SETUP, sa_setup(lr=0.0))
    bp["sa_setup-index-n"] = (SA_SETUP, sa_setup(index=10))
    bp["sa_setup-n-1"] = (SA_SETUP, sa_setup(index=0, n=1))
    bp["sa_setup-t-0"] = (SA_SETUP, sa_setup(t=0))
    bp["sa_setup-bits-0"] = (SA_SETUP, sa_setup(bits=0))
    bp["sa_setup-bits-33"] = (SA_SETUP, sa_setup(bits=33))
    bp["sa_setup-levels-0"] = (SA_SETUP, sa_setup(levels=0))
    bp["sa_setup-dp-kind-3"] = (SA_SETUP, sa_setup(dp_kind=3))
    bp["sa_setup-flags-2"] = (SA_SETUP, sa_setup(flags=2))
    bp["sa_setup-clip-0"] = (SA_SETUP, sa_setup(clip=0.0))
    bp["sa_setup-clip-nan"] = (SA_SETUP, sa_setup(clip=math.nan))
    bp["sa_setup-weight-cap-inf"] = (SA_SETUP, sa_setup(weight_cap=math.inf))
    bp["sa_setup-dp-clip-neg"] = (SA_SETUP, sa_setup(dp_clip=-1.0))
    bp["sa_setup-dp-noise-nan"] = (SA_SETUP, sa_setup(dp_noise=math.nan))
    bp["sa_masked-short-fixed"] = (SA_MASKED, sa_masked()[:31])
    bp["partial-empty"] = (PARTIAL, partial(ids=(), n=0))
    bp["partial-count-high"] = (PARTIAL, partial(count=4))
    bp["partial-count-low"] = (PARTIAL, partial(count=2))
    bp["partial-ids-unsorted"] = (PARTIAL, partial(ids=(8, 3, 21)))
    bp["partial-ids-repeated"] = (PARTIAL, partial(ids=(3, 3, 21)))
    bp["partial-zero-examples"] = (PARTIAL, partial(n_ex=[10, 0, 5]))
    bp["partial-nan-loss"] = (PARTIAL, partial(loss_sum=math.nan))
    bp["partial-n-high"] = (PARTIAL, partial(n=4)[:-4])
    bp["partial-trailing"] = (PARTIAL, partial(tail=b"\0"))
    bp["partial-short-fixed"] = (PARTIAL, partial()[:23])
    bp["sa_masked-flags-2"] = (SA_MASKED, sa_masked(flags=2))
    bp["sa_masked-pad"] = (SA_MASKED, sa_masked(pad=1))
    bp["sa_masked-count-more"] = (SA_MASKED, sa_masked(count=9))
    bp["sa_masked-count-overflow"] = (SA_MASKED, sa_masked(count=2**62 + 8))
    bp["sa_masked-ragged-tail"] = (SA_MASKED, sa_masked(tail=b"\1\2"))
    bp["sa_masked-zero-examples"] = (SA_MASKED, sa_masked(n_examples=0))
    bp["sa_masked-loss-nan"] = (SA_MASKED, sa_masked(loss=math.nan))
    for name, (mtype, payload) in bp.items():
        files["bad-payload-" + name] = seal(mtype, payload, sender=17)
    return files


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "wire_corpus")
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):  # no stale files from an older version of this script
        if f.endswith(".bin"):
            os.remove(os.path.join(out, f))
    files = corpus()
    total = 0
    for name, data in sorted(files.items()):
        with open(os.path.join(out, name + ".bin"), "wb") as f:
            f.write(data)
        total += len(data)
    print("%s: %d files, %d bytes" % (out, len(files), total))


if __name__ == "__main__":
    main()
