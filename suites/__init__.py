"""The acceptance suites; installed as ``pytest_mooncake.suites`` (``pytest --pyargs pytest_mooncake.suites``)."""
