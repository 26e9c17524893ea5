"""`foretell specee ...` commands."""


def register(sub) -> None:
    p = sub.add_parser("specee", help="SpecEE: speculative early exiting for LLM decoding", description="SpecEE: speculative early exiting for LLM decoding.")
    p.set_defaults(_parser=p)
    p.add_subparsers(dest="specee_command", metavar="ACTION")
