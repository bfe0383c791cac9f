"""ksm-emu experiment: measurements built from many runs. `reclaim` (the
commit's claim, that the keyhole lets reclaim free KSM pages at once): the
runs and their figures in emu.experiment.reclaim, the plot in
emu.experiment.plot, the command in emu.experiment.cli."""
