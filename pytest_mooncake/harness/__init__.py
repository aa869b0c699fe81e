"""What the pytest plugin wires together: fixtures, session state, the doctor, reports."""
