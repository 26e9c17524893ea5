"""Action-aware controller: coarse vs fine-grained motion from the executed actions, with hysteresis.

On the last executed action a (delta xyz, delta rotation, gripper):
v = |a[0:3]|, v_xy = |a[0:2]|, v_z = a[2] (signed: descending counts as slow), w = |a[3:6]|.
Enter fine: v < enter_speed, or (v_xy < enter_xy and v_z < enter_z and w < enter_rot).
Exit fine:  v_z > exit_z, or (w > exit_rot and the action queue is empty).
The controller starts deciding at step ``controller_start_step``; switching into fine mode asks
for an immediate re-query (the caller drops its queued actions). The gripper is not used.
"""

from __future__ import annotations

import torch

from foretell.specprune.config import SpecPruneConfig

COARSE, FINE = "coarse", "fine"


class ActionAwareController:
    """Explicit state: ``mode`` and the number of observed steps."""

    def __init__(self, cfg: SpecPruneConfig):
        self.cfg = cfg
        self.reset_state()

    def reset_state(self) -> None:
        self.mode = COARSE
        self.steps = 0

    def update(self, action, queue_empty: bool = True) -> bool:
        """Feed one executed action; return True when the controller just switched into fine mode."""
        a = torch.as_tensor(action, dtype=torch.float32).flatten()
        self.steps += 1
        if not self.cfg.use_controller or self.steps < self.cfg.controller_start_step or a.numel() < 6:
            return False
        c = self.cfg
        v = float(a[0:3].norm())
        v_xy = float(a[0:2].norm())
        v_z = float(a[2])
        w = float(a[3:6].norm())
        if self.mode == COARSE:
            if v < c.enter_speed or (v_xy < c.enter_xy and v_z < c.enter_z and w < c.enter_rot):
                self.mode = FINE
                return True
        elif v_z > c.exit_z or (w > c.exit_rot and queue_empty):
            self.mode = COARSE
        return False
