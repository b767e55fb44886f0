"""Print every verified live value agents publish, and every message refused.

python -m edgetwin.central.example mqtt://127.0.0.1:1883 TRUST_FOLDER [TOPIC]
"""

import sys
import threading
from pathlib import Path

from edgetwin.central import Report, Subscription, Verifier, equipment, load_trust_dir, samples


def show(report: Report) -> None:
    if not report["valid"]:
        print(f"REFUSED {report['topic']}: {report['reason']}", flush=True)
        return
    for s in samples(report.get("payload")):
        late = " (late)" if report.get("hist") else ""
        print(
            f"{equipment(report['payload'])} {s.path} = {s.value} [{s.validity}]{late}", flush=True
        )


if __name__ == "__main__":
    url, trust, *topic = sys.argv[1:]
    verifier = Verifier(load_trust_dir(Path(trust)))
    Subscription(url, verifier, topic or ["openfmb/#"], show).start()
    threading.Event().wait()  # until Ctrl-C
