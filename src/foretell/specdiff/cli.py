"""`foretell specdiff ...` commands."""


def register(sub) -> None:
    p = sub.add_parser("specdiff", help="SpecDiff: self-speculative multi-level feature caching for diffusion transformers", description="SpecDiff: self-speculative multi-level feature caching for diffusion transformers.")
    p.set_defaults(_parser=p)
    p.add_subparsers(dest="specdiff_command", metavar="ACTION")
