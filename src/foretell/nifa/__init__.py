"""NIFA: node-injection fairness attack on GNNs."""
