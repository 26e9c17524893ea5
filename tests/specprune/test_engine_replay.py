"""Engine-level replay benchmark runs every method on the same expert frames (tiny random model)."""

import pytest

from foretell.core.errors import ForetellError
from foretell.specprune.replay import replay_benchmark
from foretell.specprune.sim import vocabulary
from foretell.specprune.tokenizer import InstructionTokenizer
from foretell.specprune.train import TOKENIZER_NAME

from specprune_tiny import one_thread, tiny_vla  # noqa: F401 (autouse fixture)


def test_replay_reports_every_method(tmp_path):
    tok = InstructionTokenizer(vocabulary())
    vla = tiny_vla(vocab_size=tok.vocab_size, num_layers=6)
    vla.save_pretrained(tmp_path)
    tok.save(tmp_path / TOKENIZER_NAME)
    report = replay_benchmark(tmp_path, episodes=1, repeats=1, budget=8, methods=("full", "specprune", "random"))
    rows = report["methods"]
    assert set(rows) == {"full", "specprune", "random"}
    assert rows["full"]["llm_macs_fraction"] == 1.0 and rows["full"]["llm_cpu_speedup"] == 1.0
    assert rows["random"]["visual_tokens_kept"] == 8
    assert rows["specprune"]["llm_macs_fraction"] < 1.0
    # the same episode and query schedule for the methods without a controller
    assert rows["full"]["queries"] == rows["random"]["queries"] >= 2
    with pytest.raises(ForetellError, match="first method must be 'full'"):
        replay_benchmark(tmp_path, methods=("specprune", "full"))
