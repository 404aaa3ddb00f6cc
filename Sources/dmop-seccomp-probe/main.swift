// dmop-seccomp-probe: written next.
import DMOPSandbox
