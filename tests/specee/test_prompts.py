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


def test_second_draft_round_only_appends(tmp_path):
    """The draft data of the first round (1,672 prompts) is collected in shards by position: the
    second round must leave those prompts, in that order, at the front."""
    mod = _make_prompts()
    mod.MORE_TOPICS, mod.MORE_CODE, mod.MORE_GENERAL = [], [], []
    mod.main(0, tmp_path)
    first = read_prompts(str(tmp_path / "prompts_draft.txt"), "draft")
    draft = read_prompts(None, "draft")
    assert len(first) == 1672 and draft[:1672] == first and len(draft) == 4530
