"""The anonymous rmap protocol every design implements, and the walk machinery."""
