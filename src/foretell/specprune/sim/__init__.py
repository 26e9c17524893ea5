"""Simulated tabletop testbed for SpecPrune-VLA: seeded layouts with language instructions,
a numpy environment with third-person and wrist cameras, and a scripted expert."""

from foretell.specprune.sim.env import ACTION_DIM, PROPRIO_DIM, SimState, TabletopEnv, initial_state, proprio, transition
from foretell.specprune.sim.expert import expert_action, expert_chunk
from foretell.specprune.sim.render import render_views
from foretell.specprune.sim.task import Layout, sample_layout, vocabulary

__all__ = ["ACTION_DIM", "PROPRIO_DIM", "SimState", "TabletopEnv", "initial_state", "proprio", "transition",
           "expert_action", "expert_chunk", "render_views", "Layout", "sample_layout", "vocabulary"]
