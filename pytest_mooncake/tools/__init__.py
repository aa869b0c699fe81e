"""The pytest-mooncake command line: simulate, bundle, report."""
