"""Scripted expert: solves its episodes, has fast and slow phases, and chunk labels are consistent."""

import numpy as np

from foretell.specprune.sim import expert_action, expert_chunk, initial_state, sample_layout, transition


def _rollout(seed, index):
    s = initial_state(sample_layout(seed, index))
    actions = []
    while not s.done:
        a = expert_action(s)
        actions.append(a)
        transition(s, a)
    return s, np.array(actions)


def test_expert_solves_its_episodes():
    results = [_rollout(7, i)[0] for i in range(40)]
    assert sum(r.success for r in results) == 40
    assert max(r.step for r in results) < 100


def test_expert_has_fast_transport_and_slow_fine_phases():
    _, acts = _rollout(0, 2)
    speed = np.linalg.norm(acts[:, :3], axis=1)
    assert speed.max() > 0.9                      # transport near full speed
    assert (speed < 0.4).sum() >= 10              # fine alignment / descent / grasp below the fine threshold
    assert (acts[:, 6] > 0).any() and acts[0, 6] < 0   # starts open, closes to grasp


def test_chunk_labels_are_the_next_expert_actions():
    s = initial_state(sample_layout(0, 3))
    for _ in range(5):
        transition(s, expert_action(s))
    chunk = expert_chunk(s, 8)
    assert chunk.shape == (8, 7)
    sim = s.copy()
    for k in range(8):
        a = expert_action(sim)
        np.testing.assert_allclose(chunk[k], a)
        transition(sim, a)
    assert s.step == 5   # labelling does not advance the real state
