"""The application: the `convtrain` command (Hydra app), its config schema and preflight checks, Hydra error messages, sweeps and `convtrain-report`."""
