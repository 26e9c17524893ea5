"""Scripted expert: a reactive pick-and-place controller with FAST transport and SLOW fine
alignment / grasp / place phases, and the action-chunk labels used for behaviour cloning.

Speeds are in the environment's normalised action units, chosen against the SpecPrune-VLA
controller's LIBERO thresholds (fine when |a_xyz| < 0.4): transport moves at |a_xyz| ~ 1, every
fine phase at <= ``FINE_SPEED`` (0.25) and descends at ``DESCEND_SPEED`` (0.3); lifting after a
grasp runs at 1.0 upwards (the controller's "exit fine: v_z > 0.2" rule).
"""

from __future__ import annotations

import numpy as np

from foretell.specprune.sim.env import (ACTION_DIM, DEFAULT_HORIZON, POS_STEP, ROT_STEP, SimState,
                                        transition, wrap_quarter)
from foretell.specprune.sim.task import BLOCK_HEIGHT

CRUISE_Z = 0.45            # transport height
SAFE_Z = 0.25              # below this, lift before moving sideways
GRASP_HEIGHT = BLOCK_HEIGHT - 0.02
RELEASE_HEIGHT = BLOCK_HEIGHT + 0.06
ALIGN_RADIUS = 0.12        # switch from transport to fine alignment within this distance
DESCEND_RADIUS = 0.025     # descend once aligned this well
FINE_SPEED = 0.25
DESCEND_SPEED = 0.3
FINE_YAW_SPEED = 0.3
STAY = np.array([0, 0, 0, 0, 0, 0, -1.0])


def _clip_norm(v: np.ndarray, limit: float) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v if n <= limit else v * (limit / n)


def expert_action(state: SimState) -> np.ndarray:
    """The expert's 7-D action for ``state`` (pure function of the state)."""
    a = np.zeros(ACTION_DIM)
    g, yaw = state.gripper_xyz, state.gripper_yaw
    lay = state.layout
    holding = state.held >= 0
    if state.closed and not holding:          # failed grasp: open and back off upwards
        a[2], a[6] = 0.5, -1.0
        return a
    if holding:
        target, target_yaw, work_z = lay.pad_xy[lay.target_pad], yaw, RELEASE_HEIGHT
        a[6] = 1.0
    else:
        b = lay.target_block
        target, work_z = state.block_xy[b], GRASP_HEIGHT
        target_yaw = yaw + float(wrap_quarter(state.block_yaw[b] - yaw))
        a[6] = -1.0
    d = target - g[:2]
    dist = float(np.linalg.norm(d))
    dyaw = target_yaw - yaw
    if dist > ALIGN_RADIUS:                   # FAST transport at cruise height
        if g[2] < SAFE_Z:
            a[2] = 1.0
        else:
            a[:2] = _clip_norm(d / POS_STEP, 1.0)
            a[2] = np.clip((CRUISE_Z - g[2]) / POS_STEP, -1.0, 1.0)
        a[5] = np.clip(dyaw / ROT_STEP, -1.0, 1.0)
        return a
    # SLOW fine alignment, descent and grasp / release
    a[:2] = _clip_norm(d / POS_STEP, FINE_SPEED)
    a[5] = np.clip(dyaw / ROT_STEP, -FINE_YAW_SPEED, FINE_YAW_SPEED)
    if dist <= DESCEND_RADIUS and abs(dyaw) <= 0.1:
        if g[2] > work_z + 1e-3:
            a[2] = -min(DESCEND_SPEED, (g[2] - work_z) / POS_STEP)
        else:
            a[6] = -1.0 if holding else 1.0
    return a


def expert_chunk(state: SimState, chunk: int, horizon: int = DEFAULT_HORIZON) -> np.ndarray:
    """The next ``chunk`` expert actions from ``state`` (rolled out on a copy), shape (chunk, 7).

    After the episode ends the chunk is padded with a "stay, gripper open" action.
    """
    sim = state.copy()
    out = np.tile(STAY, (chunk, 1))
    for k in range(chunk):
        if sim.done:
            break
        out[k] = expert_action(sim)
        transition(sim, out[k], horizon)
    return out
