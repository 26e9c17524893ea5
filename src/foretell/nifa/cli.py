"""`foretell nifa ...` commands."""


def register(sub) -> None:
    p = sub.add_parser("nifa", help="NIFA: node-injection fairness attack on GNNs", description="NIFA: node-injection fairness attack on GNNs.")
    p.set_defaults(_parser=p)
    p.add_subparsers(dest="nifa_command", metavar="ACTION")
