"""The evaluation report: results JSON in, Markdown and self-contained HTML out (``pytest-mooncake report``)."""
