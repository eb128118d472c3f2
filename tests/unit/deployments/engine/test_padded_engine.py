"""The padded batch's bookkeeping (rows joining, leaving, padding trimmed, positions) on a fake model
whose next token depends on every real token of its row and on its positions: any misaligned
padding, mask or position changes an answer. Real models: tests/engine/test_tensor_batching.py."""

import asyncio
import zlib

import numpy as np

import deployments.backends  # noqa: F401  (first, as in a replica: the engine modules import backend helpers)
from core.types import SamplingParams
from deployments.engine.admission import WaitingRoom
from deployments.engine.loop import stream_sequence
from deployments.engine.padded_engine import PaddedBatchEngine, TensorModel, TextSequence
from deployments.engine.sequence import Outlet

VOCAB = 50


class EchoModel(TensorModel):
    """The cache holds token ids (rows x columns, 0 on padding, ids are >= 1)."""

    def _logits(self, tokens: list[int], position: int) -> np.ndarray:
        assert position == len(tokens) - 1  # the new token sits right after the row's real tokens
        logits = np.zeros(VOCAB)
        logits[1 + zlib.crc32(bytes(tokens)) % (VOCAB - 1)] = 1.0
        return logits

    def prefill(self, ids):
        return self._logits(ids, len(ids) - 1), np.asarray([ids], dtype=np.int64)

    def decode(self, cache, tokens, positions, mask):
        assert mask.shape == (cache.shape[0], cache.shape[1] + 1)
        cache = np.concatenate([cache, tokens[:, None]], axis=1)
        rows = []
        for row, keep, position in zip(cache, mask, positions):
            assert (row[keep == 0] == 0).all() and (row[keep == 1] > 0).all()
            rows.append(self._logits([int(t) for t in row[keep == 1]], int(position)))
        return np.stack(rows), cache

    def join(self, cache, width, row, row_width):
        if cache is None:
            return row
        wider = max(width, row_width)
        return np.concatenate([np.pad(cache, ((0, 0), (wider - width, 0))), np.pad(row, ((0, 0), (wider - row_width, 0)))])

    def keep(self, cache, rows, drop):
        return cache[rows, drop:]


def engine(parallel: int, batch_tokens: int = 512) -> PaddedBatchEngine:
    return PaddedBatchEngine(EchoModel(), model_name="echo", parallel=parallel, batch_tokens=batch_tokens,
                             room=WaitingRoom(slots=parallel, max_queued=64, max_wait_s=300))


async def run(e: PaddedBatchEngine, i: int, prompt_len: int, max_tokens: int) -> list[int]:
    queue: asyncio.Queue = asyncio.Queue()
    sequence = TextSequence.create(lambda ids: " ".join(map(str, ids)), (), request_id=f"r{i}",
                                   prompt=[1 + (i * 7 + k) % (VOCAB - 1) for k in range(prompt_len)],
                                   budget=max_tokens, sampling=SamplingParams(temperature=0, repeat_penalty=1.0),
                                   stops=[], adapter=None, priority="interactive",
                                   outlet=Outlet(asyncio.get_running_loop(), queue.put_nowait))
    async for _ in stream_sequence(e, sequence, queue, lambda produced: None):
        pass
    return sequence.completion


SHAPES = [(3 + (i * 5) % 17, 2 + (i * 3) % 11) for i in range(12)]  # prompt lengths and budgets of all sizes


def test_rows_of_every_length_join_and_leave_and_keep_their_answers():
    solo = engine(1)
    alone = [asyncio.run(run(solo, i, p, m)) for i, (p, m) in enumerate(SHAPES)]
    solo.close()
    batched = engine(5)

    async def together():
        return await asyncio.gather(*(run(batched, i, p, m) for i, (p, m) in enumerate(SHAPES)))

    assert asyncio.run(together()) == alone
    records = batched.log.records()
    assert max(len(r["decode"]) for r in records) == 5  # rows were shared, never more than parallel
    assert batched.busy_slots == 0 and not batched.groups
    batched.close()


def test_prompts_prefilled_per_step_stay_within_batch_tokens():
    e = engine(8, batch_tokens=20)

    async def together():
        return await asyncio.gather(*(run(e, i, 9, 3) for i in range(8)))

    asyncio.run(together())
    prefills = [sum(r["prefill"].values()) for r in e.log.records() if r["prefill"]]
    assert max(prefills) <= 20 and sum(prefills) == 8 * 9
    e.close()
