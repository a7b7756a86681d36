"""Scheduling: the Runner, its tick driver, jobs, the fixed-rate schedule and cluster-wide tick claims."""
