"""On CUDA: the captured decode graphs give the eager step's tokens, with one device->host copy per step."""

from __future__ import annotations

import pytest
import torch

from models.interfaces import GenerationSettings, ModelInfo
from models.moondream.config import preset_config
from models.moondream.decode_step import DecodeOptions
from models.moondream.generator import MoondreamGenerator
from models.moondream.serving import _tiny_tokenizer_config, random_model
from models.moondream.tokenizer import build_tiny_tokenizer
from tests.models.moondream.conftest import request, run_to_end
from tests.models.moondream.test_decode_step import admit_all, counting

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def cuda_generator(cuda_graphs: bool) -> MoondreamGenerator:
    tokenizer = build_tiny_tokenizer()
    config = _tiny_tokenizer_config(preset_config("tiny"), tokenizer).validate()
    model = random_model(config, torch.device("cuda"), torch.float32, 0)
    info = ModelInfo("moondream2-tiny", "moondream", "cuda", "float32", True, model.parameter_count(), "tiny")
    return MoondreamGenerator(
        model, tokenizer, info, max_sequences=4, decode_options=DecodeOptions(cuda_graphs=cuda_graphs)
    )


def results(generator: MoondreamGenerator) -> dict[int, object]:
    settings = GenerationSettings(max_tokens=20, max_objects=3)
    cases = [
        request(1, "caption", seed=1, settings=settings),
        request(2, "query", seed=2, text="what is red?", settings=settings),
        request(3, "detect", seed=3, settings=settings),
        request(4, "point", seed=4, settings=settings),
    ]
    events = admit_all(generator, cases) + run_to_end(generator)
    return {e.key: {k: v for k, v in e.result.items() if k != "metrics"} for e in events if e.result}


def test_cuda_graph_decode_equals_eager() -> None:
    graphs = cuda_generator(cuda_graphs=True)
    got = results(graphs)
    assert graphs.decode.graphs_captured >= 1
    assert got == results(cuda_generator(cuda_graphs=False))


def test_one_device_to_host_copy_per_step_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = cuda_generator(cuda_graphs=True)
    admit_all(generator, [request(1, "caption", settings=GenerationSettings(max_tokens=30))])
    generator.step()  # the first step of a shape captures its graph: count the replays after it
    for _ in range(5):
        with counting(generator, monkeypatch) as reads:
            generator.step()
        assert reads.scalar_reads == 0 and reads.materialised == 0
        assert reads.device_to_host == 1 == reads.readback_copies
