"""Testbed for SpecDiff: class-conditional digits models of both diffusers DiT classes, sampler, metrics, peers."""
