"""The shipped prompt files: reproducible from their script, and the eval part really held out."""

import importlib.util
from pathlib import Path

from foretell.specee.loading import read_prompts

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "specee" / "make_prompts.py"


def _make_prompts():
    spec = importlib.util.spec_from_file_location("make_prompts", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_make_prompts_rewrites_the_shipped_files_exactly(tmp_path):
    _make_prompts().main(0, tmp_path)
    for split in ("train", "eval", "draft"):
        assert read_prompts(str(tmp_path / f"prompts_{split}.txt"), split) == read_prompts(None, split), split


def test_eval_prompts_and_topics_never_reach_training():
    mod = _make_prompts()
    train, evals, draft = (read_prompts(None, s) for s in ("train", "eval", "draft"))
    assert not set(evals) & (set(train) | set(draft))
    assert not set(train) & set(draft)
    eval_topics = [t for t in mod.TOPICS if any(f.format(t=t) in evals for f in mod.FORMS)]
    assert len(eval_topics) == 12
    assert not [p for p in train + draft if any(t in p for t in eval_topics)]


def test_later_draft_rounds_only_append(tmp_path):
    """The draft data is collected in shards by position: each later round must leave the earlier
    rounds' prompts, in their order, at the front (first 1,672, then 4,530 with the second)."""
    mod = _make_prompts()
    draft = read_prompts(None, "draft")
    mod.THIRD_TOPICS = []
    mod.main(0, tmp_path / "two")
    two = read_prompts(str(tmp_path / "two" / "prompts_draft.txt"), "draft")
    mod.MORE_TOPICS, mod.MORE_CODE, mod.MORE_GENERAL = [], [], []
    mod.main(0, tmp_path / "one")
    one = read_prompts(str(tmp_path / "one" / "prompts_draft.txt"), "draft")
    assert (len(one), len(two), len(draft)) == (1672, 4530, 7186)
    assert two[:1672] == one and draft[:4530] == two
