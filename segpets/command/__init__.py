"""How a command runs: its pre-checks (entry), config checks, run record and log (record),
signals in sweeps, atomic outputs, override grammar, object building and DDP checks."""
