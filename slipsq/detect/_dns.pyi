"""Type stub of the compiled DNS-answer paths (slipsq/detect/_dns.pyx); their twins are
slipsq/detect/dga.py (Intake), slipsq/detect/unknownport.py (DnsIntake) and
slipsq/detect/dnstunnel.py (Intake)."""

from slipsq.detect import dga as _dga
from slipsq.detect import dnstunnel as _dnstunnel
from slipsq.detect import unknownport as _unknownport

class DgaIntake(_dga.Intake): ...
class ClientsIntake(_unknownport.DnsIntake): ...
class TunnelIntake(_dnstunnel.Intake): ...
