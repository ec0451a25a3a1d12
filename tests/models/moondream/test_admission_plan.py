"""Which crops the next vision forward encodes and which requests share a prefill (pure planning)."""

from __future__ import annotations

import numpy as np

from models.interfaces import GenerationRequest
from models.moondream.admission_plan import AdmissionOptions, PendingAdmission, encode_pieces, prefill_group
from models.moondream.crops import Tiling
from models.moondream.sequence import SequenceState


def pending(key: int, crops: int, input_tokens: int, encoded: int = 0) -> PendingAdmission:
    request = GenerationRequest(key=key, skill="caption", image=np.zeros((8, 8, 3), np.uint8))
    seq = SequenceState(request, slot=key, pos=input_tokens, input_tokens=input_tokens, max_tokens=8, started_s=0.0)
    return PendingAdmission(seq, np.zeros((crops, 4, 4, 3), np.uint8), Tiling(1, 1), [1, 2], encoded=encoded)


def test_a_vision_forward_takes_crops_in_admission_order_across_requests_when_batching() -> None:
    a, b, c = pending(1, 3, 100, encoded=1), pending(2, 5, 100), pending(3, 2, 100)
    assert [(p.seq.request.key, n) for p, n in encode_pieces([a, b, c], 4, batch=True)] == [(1, 2), (2, 2)]
    assert [(p.seq.request.key, n) for p, n in encode_pieces([a, b, c], 4, batch=False)] == [(1, 2)]
    done = pending(4, 2, 100, encoded=2)  # fully encoded: nothing to take from it
    assert [(p.seq.request.key, n) for p, n in encode_pieces([done, c], 4, batch=True)] == [(3, 2)]


def test_a_prefill_shares_only_encoded_requests_of_the_same_length_bucket() -> None:
    options = AdmissionOptions(prefill_batch=4, prefill_length_bucket=32)
    head = pending(1, 2, 740, encoded=2)  # bucket ceil(740/32) = 24
    same = pending(2, 2, 750, encoded=2)  # 24
    other_bucket = pending(3, 2, 770, encoded=2)  # 25
    still_encoding = pending(4, 2, 741, encoded=1)
    group = prefill_group([head, same, other_bucket, still_encoding], options, prefill_tokens=4096, context=2048)
    assert [p.seq.request.key for p in group] == [1, 2]
    assert prefill_group([head, same], AdmissionOptions(batch=False), 4096, 2048) == [head]


def test_the_prefill_token_budget_and_prefill_batch_bound_the_rows() -> None:
    rows = [pending(k, 1, 100, encoded=1) for k in range(6)]  # padded to 128 positions each
    assert len(prefill_group(rows, AdmissionOptions(prefill_batch=4), prefill_tokens=2048, context=2048)) == 4
    assert len(prefill_group(rows, AdmissionOptions(prefill_batch=4), prefill_tokens=300, context=2048)) == 2
    assert len(prefill_group(rows, AdmissionOptions(prefill_batch=8), prefill_tokens=300, context=2048)) == 2
