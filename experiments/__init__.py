"""The paper's experiments, rebuilt on fullconv. Run as `python -m experiments.<name>`."""
