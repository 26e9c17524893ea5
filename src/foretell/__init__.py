"""foretell: SpecDiff, SpecPrune-VLA, SpecEE and NIFA as usable software.

Subpackages are imported lazily so that ``import foretell`` stays cheap:
``foretell.specdiff``, ``foretell.specprune``, ``foretell.specee``, ``foretell.nifa``.
"""

__version__ = "0.1.0"

from foretell.core.errors import ForetellError  # noqa: E402

__all__ = ["ForetellError", "__version__"]
