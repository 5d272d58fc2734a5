"""The web's embedding leaves gevent's loop free: other greenlets run while it computes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Patched as gunicorn's gevent worker patches; counts how often another greenlet ran while one
# batch was embedded (enough text for a good fraction of a second of torch on any CPU).
SCRIPT = textwrap.dedent("""
    from gevent import monkey
    monkey.patch_all()
    import sys
    import gevent
    from shared.embedding import Embedder
    from web.offload import LoopFriendlyEmbedder

    embedder_class = {"plain": Embedder, "offloaded": LoopFriendlyEmbedder}[sys.argv[1]]
    embedder = embedder_class("minilm")
    embedder.encode(["warm up"])
    ticks = 0
    def tick():
        global ticks
        while True:
            ticks += 1
            gevent.sleep(0.001)
    ticker = gevent.spawn(tick)
    gevent.sleep(0.01)
    before = ticks
    embedder.encode(["a long sentence about retrieval and generation"] * 128, batch_size=128)
    print(ticks - before)
    ticker.kill()
""")


def _ticks_during_an_embedding(kind: str) -> int:
    result = subprocess.run([sys.executable, "-c", SCRIPT, kind], cwd=REPO, capture_output=True,
                            text=True, timeout=240, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split()[-1])


def test_other_greenlets_run_while_the_web_embeds() -> None:
    assert _ticks_during_an_embedding("plain") == 0  # what the offload is for
    assert _ticks_during_an_embedding("offloaded") > 0
