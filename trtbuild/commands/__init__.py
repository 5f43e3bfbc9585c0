"""The command line and what its commands print and write."""
