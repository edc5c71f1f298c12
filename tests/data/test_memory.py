"""Streaming uploads and downloads hold bounded memory: a ~200 MB object goes up as a multipart
upload and comes back down while this process's peak RSS grows by a small fraction of its size.

Peak RSS is read from ``/proc/self/status`` (VmHWM) after resetting it through
``/proc/self/clear_refs``, so earlier tests do not hide the growth. ``benchmarks/staging.py
--rss-check 2048`` runs the same measurement on 2 GiB.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import aclosing

import pytest

from jupyter_heroes.data import names
from jupyter_heroes.testing.memory import peak_rss, reset_peak_rss

pytestmark = pytest.mark.s3
MiB = 1024 * 1024
SIZE = 200 * MiB


async def test_200mb_round_trip_with_bounded_memory(storage, org_name):
    assert storage.part_size == 5 * MiB and storage.parallel_parts == 2
    bucket = names.user_bucket(org_name, "alice")
    await storage.create_bucket(bucket)
    sent = hashlib.sha256()

    async def source():
        block = os.urandom(1 * MiB)
        for i in range(SIZE // MiB):
            chunk = hashlib.sha256(i.to_bytes(4, "big")).digest() + block[32:]  # every MiB different
            sent.update(chunk)
            yield chunk

    base = reset_peak_rss()
    result = await storage.upload(bucket, "big/200mb.bin", source(), size=SIZE)
    up_growth = peak_rss() - base
    assert result.parts == 40 and result.size == SIZE
    assert result.sha256 == sent.hexdigest()

    base = reset_peak_rss()
    received, n = hashlib.sha256(), 0
    async with aclosing(storage.download(bucket, "big/200mb.bin")) as chunks:
        async for chunk in chunks:
            assert len(chunk) <= storage.chunk_size
            received.update(chunk)
            n += len(chunk)
    down_growth = peak_rss() - base
    assert n == SIZE and received.hexdigest() == sent.hexdigest()

    print(
        f"\npeak RSS growth: upload {up_growth / MiB:.1f} MiB, download {down_growth / MiB:.1f} MiB for {SIZE // MiB} MiB"
    )
    # what the design holds: the parts in flight and the one being filled, one chunk; allow 3x that
    # for the allocator (each worker thread has its own malloc arena) - still a fraction of the size
    design = storage.part_size * (storage.parallel_parts + 1) + storage.chunk_size
    assert up_growth < 3 * design < SIZE / 4, f"upload grew RSS by {up_growth / MiB:.1f} MiB"
    assert down_growth < 8 * storage.chunk_size + 8 * MiB, f"download grew RSS by {down_growth / MiB:.1f} MiB"
    await storage.delete_bucket(bucket, force=True)
