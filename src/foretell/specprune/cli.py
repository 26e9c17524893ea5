"""`foretell specprune ...` commands."""


def register(sub) -> None:
    p = sub.add_parser("specprune", help="SpecPrune-VLA: action-aware visual-token pruning for VLA models", description="SpecPrune-VLA: action-aware visual-token pruning for VLA models.")
    p.set_defaults(_parser=p)
    p.add_subparsers(dest="specprune_command", metavar="ACTION")
