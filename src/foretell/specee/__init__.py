"""SpecEE: speculative early exiting for LLM decoding."""
