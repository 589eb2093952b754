"""The stage layer: one function per stage, the only code that reads the config (see catdog_lab.registry)."""
