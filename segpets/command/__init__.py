"""How a command runs: its pre-checks (entry), config checks, run record and log (record),
what it does and says at start (extras), its loggers (loggers), a quiet console (console),
signals in sweeps, atomic outputs, override grammar, object building and DDP checks."""
