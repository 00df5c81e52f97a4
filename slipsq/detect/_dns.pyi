"""Type stub of the compiled DNS-answer paths (slipsq/detect/_dns.pyx); their twins are
slipsq/detect/dga.py (Intake) and slipsq/detect/unknownport.py (DnsIntake)."""

from slipsq.detect import dga as _dga
from slipsq.detect import unknownport as _unknownport

class DgaIntake(_dga.Intake): ...
class ClientsIntake(_unknownport.DnsIntake): ...
