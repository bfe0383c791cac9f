"""ksm-emu campaign: many explore and run jobs, on a local pool or a Dask cluster."""
