"""EdgeTwin's central side: what a central system imports to receive, verify and decode what
agents publish, and to build, sign and send their commands.

Receiving::

    from edgetwin.central import Subscription, Verifier, load_trust_dir, samples

    verifier = Verifier(load_trust_dir(Path("trust")))  # <kid>.pem: the agents' public keys
    Subscription("mqtts://broker:8883", verifier, ["openfmb/#"], on_report).start()

``on_report`` gets one ``Report`` per message: signature and key, topic binding, sequence gaps,
duplicates and late arrivals, freshness, and the decoded payload (``samples`` lists its values).

Commanding: ``build_command`` (a signed control profile for a twin of a controllable kind,
``CONTROLS``), ``publish`` and ``ResultWaiter`` (the twin's verified answer).

Installable on its own (``edgetwin-central``: paho-mqtt, msgpack and cryptography, nothing of the
agent); ``docs/central.md`` is the guide, ``edgetwin.central.example`` a complete consumer.
"""

from edgetwin.central.command import ResultWaiter, build_command, control_shape, publish
from edgetwin.central.subscriber import Report, SeqTracker, Subscription, Verifier, subscribe
from edgetwin.central.values import Sample, equipment, samples
from edgetwin.core.errors import VerificationError
from edgetwin.wire.control import CONTROLS
from edgetwin.wire.envelope import verify
from edgetwin.wire.keys import generate, load_private, load_public, load_trust_dir
from edgetwin.wire.mqtt import Tls

__all__ = [
    "CONTROLS",
    "Report",
    "ResultWaiter",
    "Sample",
    "SeqTracker",
    "Subscription",
    "Tls",
    "VerificationError",
    "Verifier",
    "build_command",
    "control_shape",
    "equipment",
    "generate",
    "load_private",
    "load_public",
    "load_trust_dir",
    "publish",
    "samples",
    "subscribe",
    "verify",
]
