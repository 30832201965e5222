"""The metrics ledger: objects, locks and rmap walks, as the designs report them."""
