"""Build slipsq's compiled core.

The compiled core, one module per pipeline stage, each beside its readable twin:
`slipsq/_decode.pxd` is the packet decoder (inline functions compiled into the modules that cimport
it; `slipsq._decode` only shows it to the tests). `slipsq._flowtable` is the flow table.
`slipsq.sources._pcap` reads captures into the table. `slipsq._appdecode` decodes the app packets the
table hands up most (DNS answers). `slipsq.detect.stratosphere._letters` is the Stratosphere
detector's per-flow path (letters, Markov matching); `slipsq.detect._portscan` and `_beacon` the per-flow state
of the port scan and beacon detectors (`_portscan` also the servers-in-use table that portscan shares
with reconnect); `_p2p`, `_bruteforce`, `_exfil` and `_reconnect` the per-flow tests of the P2P,
brute force, exfiltration and reconnection-storm detectors (`_reconnect` cimports `_portscan`'s
servers table: `_portscan.pxd`); `_dns` what each DNS answer costs the DGA and unknown-port detectors.
`slipsq._lru` is slipsq.lru's touch and put, and `LruMap`, the bounded map `lru.new()` makes, cimported
(`_lru.pxd`) by the compiled modules that keep a bounded map. `slipsq/_tupleindex.pxd` (inline, like
`_decode.pxd`) is the 4-tuple index of `_letters` and `_beacon`.
`slipsq.sources._nfq` is the NFQUEUE source; it needs libnetfilter_queue's headers
and NetfilterQueue's `.pxd`, so it is only built where both are present (a replay-only machine still
builds).
"""

import os
import shutil

from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup

CFLAGS = ["-O3", "-Wno-unused-function", "-Wno-unreachable-code"]


def extensions() -> list[Extension]:
    exts = [
        Extension("slipsq._decode", ["slipsq/_decode.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq._flowtable", ["slipsq/_flowtable.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq._lru", ["slipsq/_lru.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.sources._pcap", ["slipsq/sources/_pcap.pyx"], extra_compile_args=CFLAGS),
        # no FMA contraction: the compiled Markov sums must equal markov.py's to the last bit
        Extension("slipsq.detect.stratosphere._letters", ["slipsq/detect/stratosphere/_letters.pyx"],
                  extra_compile_args=[*CFLAGS, "-ffp-contract=off"]),
        Extension("slipsq._appdecode", ["slipsq/_appdecode.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._prefixes", ["slipsq/detect/_prefixes.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._portscan", ["slipsq/detect/_portscan.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._beacon", ["slipsq/detect/_beacon.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq._dispatch", ["slipsq/_dispatch.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq._wirescan", ["slipsq/_wirescan.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._p2p", ["slipsq/detect/_p2p.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._bruteforce", ["slipsq/detect/_bruteforce.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._exfil", ["slipsq/detect/_exfil.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._reconnect", ["slipsq/detect/_reconnect.pyx"], extra_compile_args=CFLAGS),
        Extension("slipsq.detect._dns", ["slipsq/detect/_dns.pyx"], extra_compile_args=CFLAGS),
    ]
    if os.path.exists("slipsq/sources/_nfq.pyx") and os.path.exists("/usr/include/libnetfilter_queue/libnetfilter_queue.h"):
        try:
            import netfilterqueue  # noqa: F401  (its _impl.pxd is cimported)
        except ImportError:
            pass
        else:
            exts.append(
                Extension(
                    "slipsq.sources._nfq",
                    ["slipsq/sources/_nfq.pyx"],
                    libraries=["netfilter_queue", "nfnetlink"],
                    extra_compile_args=CFLAGS,
                )
            )
    return exts


if shutil.which("cc") is None and shutil.which("gcc") is None:
    raise SystemExit("slipsq needs a C compiler (Debian: apt-get install build-essential)")

setup(
    # the shipped Markov models live in models/ at the top of a checkout (beside the package) and
    # travel inside an installed package as slipsq/models/, where slipsq.detect.stratosphere.markov looks for them
    packages=[*find_packages(include=["slipsq", "slipsq.*"]), "slipsq.models"],
    package_dir={"slipsq.models": "models"},
    package_data={"slipsq": ["*.pyx", "*.pxd", "*.pyi", "py.typed", "detect/README.md"],
                  "slipsq.sources": ["*.pyx", "*.pyi"],
                  "slipsq.detect": ["*.pyx", "*.pxd", "*.pyi"],
                  "slipsq.detect.stratosphere": ["*.pyx", "*.pyi"],
                  "slipsq.report": ["templates/*.j2"],
                  "slipsq.models": ["*.json", "README.md"]},
    ext_modules=cythonize(
        extensions(),
        language_level=3,
        nthreads=min(4, os.cpu_count() or 1),  # .pyx -> .c in parallel (the C compiles: setup.cfg)
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
)
