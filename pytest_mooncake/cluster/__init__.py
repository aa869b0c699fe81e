"""The Mooncake master, store nodes, the store client and transfer engine."""
