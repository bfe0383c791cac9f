"""ksm-emu run: its command line (emu.run.cli); the run itself is emu.supervise."""
